"""The watcher's Prometheus metrics, and the small HTTP server for /metrics (started only
when METRICS_PORT is set).

Whoever reaches the port is not trusted to behave: a request head is read up to 8 KiB and
for 5 s at most, and at most four scrapes are answered at once (more are closed at once),
so a client that connects and sends nothing holds one thread for 5 s and no more.

`oomdump_last_capture_top_bytes{comm,function}` names the leak: see `Culprits`.
"""

import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from sidecar import prom

MAX_REQUEST_HEAD = 8 * 1024
REQUEST_SECONDS = 5.0
MAX_SCRAPES = 4
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The culprit gauge's bounds: series (one per process name), and bytes of each label. Go
# function names run to some 200 bytes with generics; the kernel cuts a comm at 15.
MAX_CULPRITS = 16
MAX_FUNCTION_BYTES = 256
MAX_COMM_BYTES = 64


class Culprits:
    """The function holding the most in-use bytes (flat, `inuse_space`) in the latest capture
    of each process name, as `oomdump_last_capture_top_bytes{comm,function}` = those bytes.

    One series per comm: a capture replaces its name's series, and one whose profile could
    not be read (or named nothing) removes it, so the series is always the latest capture's.
    A series outlives its process: the kernel's kill usually follows the capture within a
    second, before any scrape, and the restarted container's process (same comm) replaces
    it. At most MAX_CULPRITS series: a new name past that drops the least recently captured.
    The function name is the app's to choose, so both labels go through
    `prom.bounded_label` (the exposition's escaping does the rest)."""

    def __init__(self, gauge: prom.Gauge) -> None:
        self._gauge = gauge
        self._functions: OrderedDict[str, str] = OrderedDict()  # comm -> function, oldest first
        self._lock = threading.Lock()

    def name(self, comm: str, top: Sequence[dict[str, Any]]) -> None:
        """A capture of a process called `comm` whose top functions are `top` (may be empty)."""
        comm = prom.bounded_label(comm, MAX_COMM_BYTES)
        with self._lock:
            old = self._functions.pop(comm, None)
            if old is not None:
                self._gauge.remove(comm, old)
            if not top:
                return
            function = prom.bounded_label(str(top[0]["name"]), MAX_FUNCTION_BYTES)
            self._gauge.labels(comm, function).set(top[0]["flat_bytes"])
            self._functions[comm] = function
            while len(self._functions) > MAX_CULPRITS:
                dropped, its_function = self._functions.popitem(last=False)
                self._gauge.remove(dropped, its_function)


class Metrics:
    def __init__(self) -> None:
        self.registry = prom.Registry()
        add = self.registry.register
        self.watched = add(prom.Gauge("oomdump_watched_processes", "Processes watched now"))
        self.unwatched = add(
            prom.Gauge(
                "oomdump_unwatched_processes",
                "Processes seen but not watched, by reason",
                ("reason",),
            )
        )
        self.captures = add(
            prom.Counter(
                "oomdump_captures_total",
                "Heap profiles saved to the spool, by fetch kind (first, gc)",
                ("kind",),
            )
        )
        self.failures = add(
            prom.Counter(
                "oomdump_capture_failures_total",
                "Fetches or captures that saved nothing, by reason",
                ("reason",),
            )
        )
        self.missed = add(
            prom.Counter(
                "oomdump_missed_total",
                "Processes gone over their threshold (or OOM-killed) with no profile saved, by "
                "reason (no-port-yet, killed-during-capture, fetch-failed, "
                "killed-before-capture, in-cooldown)",
                ("reason",),
            )
        )
        self.crossing_to_dump = add(
            prom.Histogram(
                "oomdump_crossing_to_dump_seconds",
                "From the sample that found the process over the threshold to its profile on disk",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            )
        )
        self.uploads = add(
            prom.Counter(
                "oomdump_uploads_total",
                "Upload attempts, by outcome and reason",
                ("outcome", "reason"),
            )
        )
        self.culprits = Culprits(
            add(
                prom.Gauge(
                    "oomdump_last_capture_top_bytes",
                    "In-use bytes of the function holding the most in the latest capture of "
                    f"each process name (comm); at most {MAX_CULPRITS} names, the least "
                    "recently captured dropped first",
                    ("comm", "function"),
                )
            )
        )
        self.detector_wakeups = add(
            prom.Counter(
                "oomdump_detector_wakeups_total",
                "Waits of the watch loop ended, by what ended them: memory.events (a cgroup v2 "
                "memory event), eventfd (a cgroup v1 usage threshold), wake (new processes, "
                "shutdown), timeout (a sample due)",
                ("source",),
            )
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> Callable[[], None]:
        """Serve /metrics on `port` (OSError if it cannot listen there); returns the function
        that stops serving."""
        server = _Server(self.registry, port, addr)
        return server.stop

    def upload_result(self, outcome: str, reason: str) -> None:
        self.uploads.labels(outcome, reason).inc()


class _Server:
    """Answers GET (and HEAD) on any path with the exposition; one thread per scrape."""

    def __init__(self, registry: prom.Registry, port: int, addr: str) -> None:
        self._registry = registry
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self._listener = socket.create_server((addr, port), family=family, backlog=16)
        self._slots = threading.BoundedSemaphore(MAX_SCRAPES)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                # Stopped, or out of file descriptors for a moment: wait, then try again.
                self._stopped.wait(0.1)
                continue
            if not self._slots.acquire(blocking=False):
                connection.close()  # enough scrapes in progress
                continue
            threading.Thread(
                target=self._answer, args=(connection,), name="metrics-scrape", daemon=True
            ).start()

    def _answer(self, connection: socket.socket) -> None:
        try:
            with connection, suppress(OSError):
                deadline = time.monotonic() + REQUEST_SECONDS
                reply = self._reply_to(_read_request_line(connection, deadline))
                if reply:
                    _wait_at_most(connection, deadline).sendall(reply)
        finally:
            self._slots.release()

    def _reply_to(self, request_line: bytes | None) -> bytes:
        if request_line is None:
            return b""  # the client went away, or took too long
        if request_line is _TOO_LARGE:
            return _reply("431 Request Header Fields Too Large", b"too large\n")
        method = request_line.split(b" ", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _reply("405 Method Not Allowed", b"GET only\n", extra="Allow: GET, HEAD\r\n")
        reply = _reply("200 OK", self._registry.render(), CONTENT_TYPE)
        return reply[: reply.index(b"\r\n\r\n") + 4] if method == b"HEAD" else reply


_TOO_LARGE = b"\0too large"  # no request line has a NUL byte: tells the caller, by identity


def _read_request_line(connection: socket.socket, deadline: float) -> bytes | None:
    """The request line once the whole head is in; None if the client went away or took
    too long; _TOO_LARGE past MAX_REQUEST_HEAD."""
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > MAX_REQUEST_HEAD:
            return _TOO_LARGE
        try:
            more = _wait_at_most(connection, deadline).recv(4096)
        except OSError:  # TimeoutError included
            return None
        if not more:
            return None
        data += more
    return data.split(b"\n", 1)[0].rstrip(b"\r")


def _wait_at_most(connection: socket.socket, deadline: float) -> socket.socket:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    connection.settimeout(remaining)
    return connection


def _reply(status: str, body: bytes, content_type: str = "text/plain", extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + body
