"""`make demo` end to end: it captures, names the leak, shows the kill, and cleans up."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo.py"


@pytest.mark.cgroup
@pytest.mark.usefixtures("cgroup_v1")
def test_demo_captures_names_the_leak_and_shows_the_kill(tmp_path: Path) -> None:
    env = {**os.environ, "DEMO_DUMP_DIR": str(tmp_path / "dumps")}
    result = subprocess.run(
        [sys.executable, str(DEMO)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "main.leakDocuments   <-- the leak" in out
    assert "the kernel OOM-killed the app" in out
    dumps = list((tmp_path / "dumps").rglob("*.pb.gz"))
    assert dumps and str(dumps[0]) in out
    leftovers = [d for d in os.listdir("/sys/fs/cgroup/memory") if d.startswith("oomdump-demo")]
    assert not leftovers


def test_demo_refuses_without_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to an unprivileged user")
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, str(DEMO)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "run the demo as root" in result.stderr
