"""Fixtures for the race tests: the bench's Go leaker, cgroup groups at a path of our own."""

import io
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar import log
from testinfra import waiting
from testinfra.cgroups import MEMORY_ROOT, MemoryCgroup, remove_group, require_cgroup_v1
from testinfra.gobuild import build_local

REPO = Path(__file__).resolve().parents[2]
LEAKER_SOURCE = REPO / "bench" / "capture" / "leaker"


@pytest.fixture(scope="session")
def leaker() -> Path:
    """The Go leaker of bench/capture (built once into ~/.cache/oomdump)."""
    return build_local("leaker", LEAKER_SOURCE)


def start_leaker(group: MemoryCgroup, binary: Path, shape: str, *extra: str) -> subprocess.Popen:
    """Start the leaker in `group`, waiting (SIGUSR1) to leak; returns once it serves pprof."""
    process = group.spawn([str(binary), "-shape", shape, *extra], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("listening "), f"leaker said {line!r}"
    return process


@pytest.fixture
def group_path() -> Iterator[Path]:
    """A cgroup v1 memory path of the test's own (not created yet), removed at the end."""
    require_cgroup_v1()
    path = MEMORY_ROOT / f"oomdump-race-{secrets.token_hex(4)}"
    try:
        yield path
    finally:
        remove_group(path)


def wait_for(condition, deadline: float, what: str) -> None:
    """testinfra.waiting.wait_for, in the argument order these tests read best."""
    waiting.wait_for(condition, what, deadline)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What sidecar.log writes during the test."""
    stream = io.StringIO()
    log.set_stream(stream)
    try:
        yield stream
    finally:
        log.set_stream(sys.stderr)
