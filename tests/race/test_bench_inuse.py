"""The bench's completeness figure: its profile reader agrees with `go tool pprof -raw`
on a real heap profile of the real leaker."""

import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "capture"))
from inuse import inuse_bytes

MiB = 1024 * 1024


def pprof_raw_inuse(profile: Path) -> int:
    raw = subprocess.run(
        ["go", "tool", "pprof", "-raw", str(profile)], capture_output=True, text=True, check=True
    ).stdout
    lines = raw.splitlines()
    header = lines.index("Samples:") + 1
    column = lines[header].split().index("inuse_space/bytes")
    total = 0
    for line in lines[header + 1 :]:
        head, colon, _ = line.partition(":")
        if not colon or not head.split() or not head.split()[0].isdigit():
            if line and not line.startswith(" "):
                break  # the next section (Locations)
            continue
        total += int(head.split()[column])
    return total


@pytest.fixture
def idle_leaker(leaker: Path):
    # 8 MiB retained at once, the next doubling an hour away: a heap that holds still.
    process = subprocess.Popen(
        [str(leaker), "-shape", "doubling", "-start", "8", "-period", "1h", "-now"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().split()[1])
        yield port
    finally:
        process.kill()
        process.wait()


@pytest.mark.skipif(shutil.which("go") is None, reason="needs the go toolchain for go tool pprof")
def test_inuse_matches_go_tool_pprof(idle_leaker: int, tmp_path: Path) -> None:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{idle_leaker}/debug/pprof/heap?gc=1", timeout=10
    ) as response:
        data = response.read()
    profile = tmp_path / "heap.pb.gz"
    profile.write_bytes(data)
    ours = inuse_bytes(data)
    assert ours == pprof_raw_inuse(profile)
    assert ours >= 8 * MiB


def test_inuse_refuses_what_is_not_a_heap_profile() -> None:
    import gzip

    with pytest.raises(ValueError, match="not a heap profile"):
        inuse_bytes(gzip.compress(b""))
