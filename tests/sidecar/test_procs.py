"""The process table on prepared /proc trees, and on real processes where it matters."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar import procs
from tests.sidecar.proctree import PF_KTHREAD, FakeProcess, stat_line, write_process


def test_parse_stat_with_spaces_and_parens_in_comm() -> None:
    stat = procs.parse_stat(stat_line(42, "my) odd (name", 98765))
    assert (stat.comm, stat.starttime) == ("my) odd (name", 98765)


def test_scan_skips_self_pause_and_kernel_threads(tmp_path: Path) -> None:
    write_process(tmp_path, FakeProcess(1, "pause"))
    write_process(tmp_path, FakeProcess(2, "kthreadd", flags=PF_KTHREAD))
    write_process(tmp_path, FakeProcess(7, "app", starttime=500))
    write_process(tmp_path, FakeProcess(9, "python3"))
    (tmp_path / "self").symlink_to("9")
    (tmp_path / "meminfo").write_text("MemTotal: 1 kB\n")
    candidates, skipped = procs.scan(tmp_path, procs.own_pid(tmp_path))
    assert [p.key for p in candidates] == [procs.ProcessKey(7, 500)]
    assert {key.pid: reason for key, reason in skipped.items()} == {
        1: "pod sandbox pause process",
        2: "kernel thread",
        9: "the watcher itself",
    }


def test_vanished_mid_scan_is_left_out(tmp_path: Path) -> None:
    write_process(tmp_path, FakeProcess(7, "app"))
    (tmp_path / "8").mkdir()  # listed, but its stat is gone by the time we read it
    candidates, skipped = procs.scan(tmp_path, 1)
    assert [p.pid for p in candidates] == [7]
    assert not skipped


def test_reused_pid_is_a_new_process(tmp_path: Path) -> None:
    write_process(tmp_path, FakeProcess(7, "app", starttime=100))
    first = procs.scan(tmp_path, 1)[0][0].key
    (tmp_path / "7" / "stat").write_text(stat_line(7, "app", 200))
    second = procs.scan(tmp_path, 1)[0][0].key
    assert first != second
    assert not procs.is_alive(tmp_path, first)
    assert procs.is_alive(tmp_path, second)


def test_unlistable_proc_root_is_a_clear_error(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(RuntimeError, match="cannot list PROC_ROOT"):
        procs.scan(tmp_path / "missing", 1)


# prctl(PR_SET_NAME, "pause"), then wait for stdin to close.
RENAMED_PAUSE = (
    "import ctypes, sys; ctypes.CDLL(None).prctl(15, b'pause'); print(1, flush=True); "
    "sys.stdin.read()"
)


def test_an_app_that_names_itself_pause_is_still_watched(tmp_path: Path) -> None:
    """comm is the app's to choose: a real process renamed `pause` that is not PID 1 of
    its PID namespace is a candidate like any other."""
    script = RENAMED_PAUSE
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "1"
        stat = procs.read_stat(Path("/proc"), process.pid)
        assert stat is not None and stat.comm == "pause"
        assert not procs.is_namespace_init(Path("/proc"), process.pid)
        candidates, _ = procs.scan(Path("/proc"), os.getpid())
        assert process.pid in [candidate.pid for candidate in candidates]
    finally:
        process.kill()
        process.wait()


def test_the_init_of_a_pid_namespace_named_pause_is_the_sandbox(tmp_path: Path) -> None:
    """A real PID namespace whose PID 1 is called `pause`, as the pod sandbox's is."""
    if os.geteuid() != 0:
        pytest.skip("a PID namespace needs root")
    script = RENAMED_PAUSE
    process = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "1"
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        (pause,) = map(int, children)
        assert procs.is_namespace_init(Path("/proc"), pause)
        _, skipped = procs.scan(Path("/proc"), os.getpid())
        assert "pod sandbox pause process" in [
            reason for key, reason in skipped.items() if key.pid == pause
        ]
    finally:
        process.kill()
        process.wait()
