"""The process table on prepared /proc trees."""

from pathlib import Path

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
