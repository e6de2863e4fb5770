"""Fixtures for the watcher's tests: the Go leak program, the log lines, cgroup v1 checks."""

import io
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar import log
from testinfra.cgroups import require_cgroup_v1
from testinfra.gobuild import build_local

from .servers import read_port, stop

REPO = Path(__file__).resolve().parents[2]
LEAK_SOURCE = REPO / "examples" / "go-memory-leak"


@pytest.fixture(scope="session")
def leak_binary() -> Path:
    """examples/go-memory-leak, built once into ~/.cache/oomdump."""
    return build_local("go-memory-leak", LEAK_SOURCE)


@pytest.fixture
def cgroup_v1() -> None:
    require_cgroup_v1()


class LogLines:
    def __init__(self) -> None:
        self.buffer = io.StringIO()

    @property
    def lines(self) -> list[str]:
        return self.buffer.getvalue().splitlines()

    def matching(self, *needles: str) -> list[str]:
        return [line for line in self.lines if all(n in line for n in needles)]


@pytest.fixture
def logs() -> Iterator[LogLines]:
    """The watcher's log lines, captured."""
    captured = LogLines()
    log.set_stream(captured.buffer)
    try:
        yield captured
    finally:
        import sys

        log.set_stream(sys.stderr)


@pytest.fixture(scope="module")
def go_pprof_port(leak_binary: Path) -> Iterator[int]:
    """The demo program leaking slowly (stays far from any limit), serving real pprof."""
    process = subprocess.Popen(
        [str(leak_binary), "-port", "0", "-mode", "gradual", "-step", "1024", "-interval", "1s"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield read_port(process, "pprof listening on")
    finally:
        stop(process)
