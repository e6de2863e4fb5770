"""PortFinder: the ports of real processes (this test's own sockets and a child's),
re-read from /proc/<pid>/net/tcp{,6} only when the process's socket fds changed, and at
most once per network namespace per refresh. The reads are counted through the injected
table reader (the real one underneath)."""

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar import ports

PROC = Path("/proc")


class CountingReader:
    def __init__(self) -> None:
        self.reads: list[int] = []

    def __call__(self, proc_root: Path, pid: int) -> list[ports.Listener]:
        self.reads.append(pid)
        return ports.read_tcp_tables(proc_root, pid)


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def listen(opened: list[socket.socket]) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    opened.append(sock)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock.getsockname()[1]


def refresh(finder: ports.PortFinder, key: object, pid: int) -> set[int]:
    finder.begin()
    return {endpoint.port for endpoint in finder.find(key, pid)}


def test_tables_not_reread_while_fds_unchanged(sockets: list[socket.socket]) -> None:
    port = listen(sockets)
    reader = CountingReader()
    finder = ports.PortFinder(PROC, reader)
    assert port in refresh(finder, "me", os.getpid())
    assert port in refresh(finder, "me", os.getpid())  # one more look settles the fd set
    settled = len(reader.reads)
    assert settled == 2
    for _ in range(5):
        assert port in refresh(finder, "me", os.getpid())
    assert len(reader.reads) == settled


def test_new_listener_found_at_the_next_refresh(sockets: list[socket.socket]) -> None:
    first = listen(sockets)
    finder = ports.PortFinder(PROC, CountingReader())
    for _ in range(3):
        refresh(finder, "me", os.getpid())
    later = listen(sockets)
    assert refresh(finder, "me", os.getpid()) >= {first, later}


def test_socket_that_starts_listening_later_is_found(sockets: list[socket.socket]) -> None:
    # socket() and bind() come before listen(): the fd set does not change at listen().
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sockets.append(sock)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    finder = ports.PortFinder(PROC, CountingReader())
    assert port not in refresh(finder, "me", os.getpid())
    sock.listen()
    assert port in refresh(finder, "me", os.getpid())


def test_one_read_per_network_namespace_per_refresh(sockets: list[socket.socket]) -> None:
    own = listen(sockets)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys\n"
            "s = socket.create_server(('127.0.0.1', 0))\n"
            "print(s.getsockname()[1], flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        child_port = int(child.stdout.readline())
        reader = CountingReader()
        finder = ports.PortFinder(PROC, reader)
        finder.begin()
        mine = {e.port for e in finder.find("me", os.getpid())}
        theirs = {e.port for e in finder.find("child", child.pid)}
        assert own in mine and child_port not in mine
        assert theirs == {child_port}
        assert len(reader.reads) == 1  # same namespace: the child's rows came from the cache
    finally:
        child.kill()
        child.wait()


def test_forgotten_process_is_read_afresh(sockets: list[socket.socket]) -> None:
    listen(sockets)
    reader = CountingReader()
    finder = ports.PortFinder(PROC, reader)
    for _ in range(3):
        refresh(finder, "me", os.getpid())
    before = len(reader.reads)
    finder.forget(["me"])
    refresh(finder, "me", os.getpid())
    assert len(reader.reads) == before + 1


def test_vanished_process_raises() -> None:
    finder = ports.PortFinder(PROC)
    finder.begin()
    with pytest.raises(OSError):
        finder.find("gone", 2**22 + 1)


CHILD_LISTENER = """
import socket, sys
opened = []
for command in sys.stdin:
    if command.strip() == "close":
        opened.pop().close()
    else:
        opened.append(socket.create_server(("127.0.0.1", 0)))
        print(opened[-1].getsockname()[1], flush=True)
"""


@pytest.fixture
def child_listener() -> Iterator[subprocess.Popen[str]]:
    """A process that opens a listener on `listen` (printing its port) and closes the last
    one on `close`; its fds change only when told (unlike this test's own: listing a
    directory opens one more)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_LISTENER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def tell(child: subprocess.Popen[str], command: str) -> int | None:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(command + "\n")
    child.stdin.flush()
    return int(child.stdout.readline()) if command == "listen" else None


def test_settled_process_is_listed_again_only_when_its_fd_count_changes(
    child_listener: subprocess.Popen[str],
) -> None:
    """Where /proc reports the fd count as the fd directory's size (Linux >= 6.2), a settled
    process is not listed while the count holds: a listener swapped for another in the same
    fd slot is found at the latest FULL_LOOK_EVERY looks later, one more fd at once."""
    pid = child_listener.pid
    first = tell(child_listener, "listen")
    fd_dir = f"/proc/{pid}/fd"
    if os.stat(fd_dir).st_size != len(os.listdir(fd_dir)):
        pytest.skip("this kernel does not report fd counts in /proc/<pid>/fd's size")
    finder = ports.PortFinder(PROC, CountingReader())
    for _ in range(3):
        refresh(finder, "child", pid)
    tell(child_listener, "close")
    second = tell(child_listener, "listen")  # the lowest free fd: the one just closed
    looks = 1
    while second not in (found := refresh(finder, "child", pid)):
        assert first in found  # what was known until the next listing
        looks += 1
        assert looks <= ports.FULL_LOOK_EVERY + 1, "the swap was never found"
    assert looks > 1, "the unchanged fd count should have spared the listing"
    third = tell(child_listener, "listen")  # one more fd: listed at the next look
    assert third in refresh(finder, "child", pid)
