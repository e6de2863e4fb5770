"""Name the leak: the top functions of a saved heap profile by `inuse_space`, read with the
project's own bounded reader (`sidecar.heapprofile`), after the race (the profile is on
disk first). The limits are tighter than the reader's defaults: the watcher reads while
other processes may be racing their kill, so one read holds the interpreter briefly.

`Reader` runs the reads one at a time on a thread of its own, off the watch loop and off
the capture threads, so a costly profile delays no other capture: see its docstring.
"""

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sidecar import heapprofile, log

TOP = 3
WATCHER_LIMITS = replace(
    heapprofile.DEFAULT,
    uncompressed_bytes=8 * 1024 * 1024,
    seconds=0.5,
)


# A profile kept for the next capture's growth names at most this many functions, so what
# the watcher keeps per process stays small whatever the app sends.
KEEP_FUNCTIONS = 10_000


@dataclass(frozen=True)
class Reading:
    top: list[dict[str, Any]]  # the top functions by flat in-use bytes, as metadata has them
    error: str | None  # why the profile could not be read within the limits
    heap: heapprofile.HeapProfile | None  # kept for the next capture's growth, when small


def read_file(path: Path, n: int = TOP) -> Reading:
    """`read` of a saved profile; an unreadable file is a Reading with its error."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return Reading([], f"unreadable-file: {error.strerror or error}", None)
    return read(data, n)


def read(data: bytes, n: int = TOP) -> Reading:
    try:
        heap = heapprofile.read(data, WATCHER_LIMITS, sample_types=("inuse_space",))
        rows = heapprofile.top(heap, "inuse_space", n)
    except heapprofile.ProfileError as error:
        return Reading([], f"{error.reason}: {error.detail}", None)
    kept = heap if len(heap.names) <= KEEP_FUNCTIONS else None
    return Reading([asdict(row) for row in rows if row.flat_bytes > 0], None, kept)


def growth(
    before: heapprofile.HeapProfile, after: heapprofile.HeapProfile, n: int = TOP
) -> list[dict[str, Any]]:
    """What grew most between two captures of one process (flat in-use bytes)."""
    return [asdict(row) for row in heapprofile.growth(before, after, n)]


def describe(top: list[dict[str, Any]]) -> str:
    """`main.leak 181Mi (94%), main.cache 8Mi (4%)` for logs and Events."""
    return ", ".join(
        f"{row['name']} {_mib(row['flat_bytes'])} ({100 * row['flat_share']:.0f}%)" for row in top
    )


def describe_growth(rows: list[dict[str, Any]]) -> str:
    """`main.leak +120Mi, main.cache +2Mi`."""
    return ", ".join(f"{row['name']} +{_mib(row['delta_bytes'])}" for row in rows)


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f}Mi" if size >= 2**20 else f"{size / 1024:.0f}Ki"


# Captures waiting to be read at most: past it a capture is handed on unread (its dumps say
# so), so a pod whose processes cross faster than their profiles are read cannot grow the
# queue, nor the wait of its uploads, without bound (a capture is two dumps per port, each
# read in 0.5 s at most: 16 s for 16 captures of one port each).
MAX_WAITING = 16
# While a profile is read the interpreter hands the GIL to a waiting thread after 0.5 ms
# rather than its default 5 ms. A read is pure Python and holds the GIL between hand-overs,
# and the way from a crossing to its fetch takes the GIL some ten times (the loop's wake,
# each cgroup file read, the capture thread's start, the connection): at 5 ms each, a read
# beside it added tens of milliseconds (bench/decode_beside_capture.py).
READ_SWITCH_INTERVAL = 0.0005
# How long `finish` waits for the capture being read beyond its deadline: its dumps (two
# per port, 0.5 s each at most) and their files.
FINISH_SLACK = 5.0


class Reader:
    """Runs reads (jobs) one at a time, in the order they come, on a thread that runs while
    there is something to read and ends when there is not.

    One at a time: two reads at once would share one interpreter, each getting half of the
    CPU and so half of its 0.5 s deadline, and the loop would wait behind both. A job is
    `read`, which reads and hands on (annotates, uploads, tells); `hand_on(reason)` hands on
    without reading, when the queue is full or the watcher is stopping."""

    def __init__(self, max_waiting: int = MAX_WAITING) -> None:
        self._jobs: deque[tuple[Callable[[], None], Callable[[str], None]]] = deque()
        self._max_waiting = max_waiting
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._read_until = float("inf")  # monotonic; later jobs are handed on unread

    def submit(self, read: Callable[[], None], hand_on: Callable[[str], None]) -> None:
        with self._lock:
            full = len(self._jobs) >= self._max_waiting
            if not full:
                self._jobs.append((read, hand_on))
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="reader", daemon=True)
                    self._thread.start()
        if full:
            hand_on(f"not-read: {self._max_waiting} captures were waiting to be read")

    def waiting(self) -> int:
        with self._lock:
            return len(self._jobs)

    @property
    def running(self) -> bool:
        """Whether its thread runs (it ends when nothing is left to read)."""
        with self._lock:
            return self._thread is not None

    @property
    def read_until(self) -> float:
        """The monotonic time after which jobs are handed on unread (inf: not stopping)."""
        with self._lock:
            return self._read_until

    def finish(self, read_until: float) -> None:
        """Read what waits until `read_until` (monotonic), hand the rest on unread, and
        return once done (the read in progress then gets FINISH_SLACK more at most)."""
        with self._lock:
            self._read_until = read_until
            thread = self._thread
        if thread is not None:
            thread.join(max(0.0, read_until - time.monotonic()) + FINISH_SLACK)
            if thread.is_alive():
                log.warn("reader-still-running", waiting=self.waiting())
        with self._lock:
            self._read_until = float("inf")

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._thread = None  # a later submit starts another
                    return
                read, hand_on = self._jobs.popleft()
                stopping = time.monotonic() >= self._read_until
            try:
                if stopping:
                    hand_on("not-read: the watcher was stopping")
                else:
                    with _quick_hand_over():
                        read()
            except Exception as error:  # a reading bug must never leave the others unread
                log.error("reader-crashed", error=repr(error))


_switch_lock = threading.Lock()
_switch_users = 0
_switch_before = 0.0


@contextmanager
def _quick_hand_over() -> Iterator[None]:
    """READ_SWITCH_INTERVAL while any Reader reads (several watchers in one process, as in
    tests, share the interpreter's one setting: the last to finish restores it)."""
    global _switch_users, _switch_before
    with _switch_lock:
        if _switch_users == 0:
            _switch_before = sys.getswitchinterval()
            sys.setswitchinterval(READ_SWITCH_INTERVAL)
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_before)
