"""Server processes started by tests stop with their whole process group."""

from pathlib import Path

import pytest

from testinfra.process import ProcessDied, start_process, stop_process, wait_until


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_stop_process_ends_the_children_too(tmp_path: Path) -> None:
    log = tmp_path / "log"
    process = start_process(["sh", "-c", "sleep 300 & echo $!; wait"], log)
    try:
        wait_until(lambda: log.read_text().strip().isdigit(), what="child pid", timeout=10)
        child = int(log.read_text())
        assert _alive(child)
    finally:
        stop_process(process, grace=5)
    assert process.returncode is not None
    wait_until(lambda: not _alive(child), what="child gone", timeout=10)


def test_stop_process_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "log"
    process = start_process(["sh", "-c", "trap '' TERM; echo ready; sleep 300 & wait"], log)
    wait_until(lambda: "ready" in log.read_text(), what="trap set", timeout=10)
    stop_process(process, grace=0.5)
    assert process.returncode is not None


def test_wait_until_reports_an_early_exit_with_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log"
    process = start_process(["sh", "-c", "echo 'bind: address already in use'; exit 3"], log)
    with pytest.raises(ProcessDied, match=r"(?s)server exited with 3:.*address already in use"):
        wait_until(lambda: False, what="server", timeout=30, process=process, log_path=log)
    stop_process(process)


def test_wait_until_gives_up_at_the_deadline() -> None:
    with pytest.raises(ProcessDied, match="never not ready after 0s"):
        wait_until(lambda: False, what="never", timeout=0.3)
