"""The watcher's /metrics: scraped over HTTP, it reads exactly as prometheus_client wrote it
(names, HELP, TYPE, labels, values; `_created` timestamps aside), and the server stays
bounded against clients that misbehave."""

import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sidecar import metrics as metrics_module
from sidecar.metrics import Metrics

# What the watcher exposed with prometheus_client: the contract dashboards and alerts use.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
MISSED_HELP = (
    "Processes gone over their threshold (or OOM-killed) with no profile saved, by reason "
    "(no-port-yet, killed-during-capture, fetch-failed, killed-before-capture, in-cooldown)"
)


def reference() -> SimpleNamespace:
    registry = CollectorRegistry()
    kw: dict[str, Any] = {"registry": registry}
    return SimpleNamespace(
        registry=registry,
        watched=Gauge("oomdump_watched_processes", "Processes watched now", **kw),
        unwatched=Gauge(
            "oomdump_unwatched_processes",
            "Processes seen but not watched, by reason",
            ["reason"],
            **kw,
        ),
        captures=Counter(
            "oomdump_captures_total",
            "Heap profiles saved to the spool, by fetch kind (first, gc)",
            ["kind"],
            **kw,
        ),
        failures=Counter(
            "oomdump_capture_failures_total",
            "Fetches or captures that saved nothing, by reason",
            ["reason"],
            **kw,
        ),
        missed=Counter("oomdump_missed_total", MISSED_HELP, ["reason"], **kw),
        crossing_to_dump=Histogram(
            "oomdump_crossing_to_dump_seconds",
            "From the sample that found the process over the threshold to its profile on disk",
            buckets=BUCKETS,
            **kw,
        ),
        uploads=Counter(
            "oomdump_uploads_total",
            "Upload attempts, by outcome and reason",
            ["outcome", "reason"],
            **kw,
        ),
        culprit=Gauge(
            "oomdump_last_capture_top_bytes",
            "In-use bytes of the function holding the most in the latest capture of each "
            "process name (comm); at most 16 names, the least recently captured dropped first",
            ["comm", "function"],
            **kw,
        ),
        detector_wakeups=Counter(
            "oomdump_detector_wakeups_total",
            "Waits of the watch loop ended, by what ended them: memory.events (a cgroup v2 "
            "memory event), eventfd (a cgroup v1 usage threshold), wake (new processes, "
            "shutdown), timeout (a sample due)",
            ["source"],
            **kw,
        ),
    )


def update(m: Any) -> None:
    """What the watcher does to its metrics, edge cases included."""
    m.watched.set(20)
    m.watched.set(3)
    m.unwatched.labels("gone").set(4)
    m.unwatched.clear()
    m.unwatched.labels("no memory limit").set(2)
    m.unwatched.labels('a "quoted" \\ back\nslash, ünïcode').set(1)
    m.captures.labels("first").inc()
    m.captures.labels("gc").inc()
    m.captures.labels("first").inc()
    m.failures.labels("http-404").inc()
    m.failures.labels("timeout").inc(2)
    for seconds in (0.0, 0.005, 0.0051, 1, 10, 10.5, 123456789.25, 1e-9):
        m.crossing_to_dump.observe(seconds)
    m.uploads.labels("uploaded", "").inc()
    m.uploads.labels("failed", "Unreachable").inc(3)
    m.detector_wakeups.labels("timeout").inc()
    m.detector_wakeups.labels("memory.events").inc(2)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served() -> Iterator[tuple[Metrics, int]]:
    metrics = Metrics()
    port = free_port()
    stop = metrics.serve(port, addr="127.0.0.1")
    try:
        yield metrics, port
    finally:
        stop()


def scrape(port: int, timeout: float = 5.0) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as answer:
        return answer.headers["Content-Type"], answer.read().decode()


CREATED = re.compile(r"^(\w+_created(?:\{.*\})?) \S+$", re.MULTILINE)


def test_a_scrape_reads_as_prometheus_client_wrote_it(served: tuple[Metrics, int]) -> None:
    metrics, port = served
    expected = reference()
    update(metrics)
    update(expected)
    metrics.culprits.name("leak", [{"name": "main.leak", "flat_bytes": 181 * 2**20}])
    expected.culprit.labels("leak", "main.leak").set(181 * 2**20)
    content_type, text = scrape(port)
    old = generate_latest(expected.registry).decode()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    # Line for line, the creation timestamps (which differ by when each was made) aside.
    assert CREATED.sub(r"\1 T", text) == CREATED.sub(r"\1 T", old)
    now = time.time()
    created = [float(match.group(0).rsplit(" ", 1)[1]) for match in CREATED.finditer(text)]
    assert created and all(now - 60 < stamp <= now for stamp in created)
    # And as the official parser reads it: the same families, types, HELP and samples.
    mine = {f.name: f for f in text_string_to_metric_families(text)}
    theirs = {f.name: f for f in text_string_to_metric_families(old)}
    assert mine.keys() == theirs.keys()
    for name, family in theirs.items():
        assert (mine[name].type, mine[name].documentation) == (family.type, family.documentation)
        if not name.endswith("_created"):
            assert mine[name].samples == family.samples
    # The registry answers as prometheus_client's does.
    for sample in theirs["oomdump_uploads"].samples:
        got = metrics.registry.get_sample_value(sample.name, sample.labels)
        assert got == expected.registry.get_sample_value(sample.name, sample.labels)
    assert metrics.registry.get_sample_value("oomdump_missed_total", {"reason": "x"}) is None


def test_updates_from_many_threads_are_all_counted(served: tuple[Metrics, int]) -> None:
    metrics, port = served
    threads, rounds = 8, 5000

    def work(index: int) -> None:
        for _ in range(rounds):
            metrics.failures.labels("timeout").inc()
            metrics.crossing_to_dump.observe(0.01 * index)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    while any(worker.is_alive() for worker in workers):
        scrape(port)  # scrapes while the counts move
    for worker in workers:
        worker.join()
    families = {f.name: f for f in text_string_to_metric_families(scrape(port)[1])}
    failures = {s.name: s.value for s in families["oomdump_capture_failures"].samples}
    assert failures["oomdump_capture_failures_total"] == threads * rounds
    histogram = {s.name: s.value for s in families["oomdump_crossing_to_dump_seconds"].samples}
    assert histogram["oomdump_crossing_to_dump_seconds_count"] == threads * rounds
    assert metrics.failures.labels("timeout")._value.get() == threads * rounds


def wait_for_scrape_threads(count: int) -> None:
    deadline = time.monotonic() + 5
    while sum(t.name == "metrics-scrape" for t in threading.enumerate()) != count:
        assert time.monotonic() < deadline, "scrape threads did not end"
        time.sleep(0.01)


def test_silent_clients_hold_the_server_only_so_long(
    served: tuple[Metrics, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients that connect and send nothing take at most MAX_SCRAPES threads, each for
    REQUEST_SECONDS; a scrape beside fewer of them is answered at once, and once they time
    out, scrapes are answered again."""
    monkeypatch.setattr(metrics_module, "REQUEST_SECONDS", 1.0)
    _, port = served
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        started = time.monotonic()
        assert "oomdump_watched_processes 0.0" in scrape(port)[1]
        assert time.monotonic() - started < 0.9  # not after the silent ones timed out
        wait_for_scrape_threads(3)  # the scrape's own thread has ended and freed its slot
        silent.append(socket.create_connection(("127.0.0.1", port)))
        # All slots taken: the next connection is closed unanswered.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            extra.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            unanswered = b""
            with suppress(ConnectionResetError):  # closed with the request unread
                unanswered = extra.recv(100)
            assert unanswered == b""
        for connection in silent:  # each silent client is let go after REQUEST_SECONDS
            connection.settimeout(5)
            assert connection.recv(100) == b""
        assert "oomdump_watched_processes 0.0" in scrape(port)[1]
    finally:
        for connection in silent:
            connection.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        # 9 KiB of head and no end to it: read in full, then refused.
        (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * (9216 - 31), b"431"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", b"200"),
    ],
)
def test_requests_other_than_a_scrape(
    served: tuple[Metrics, int], request_bytes: bytes, status: bytes
) -> None:
    _, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(request_bytes)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    assert answer.split(b" ", 2)[1] == status, answer[:100]
    if request_bytes.startswith(b"HEAD"):
        assert answer.endswith(b"\r\n\r\n")  # the head alone
        assert b"Content-Type: text/plain; version=0.0.4" in answer


def test_a_busy_port_is_an_oserror_and_stop_frees_it() -> None:
    port = free_port()
    stop = Metrics().serve(port, addr="127.0.0.1")
    try:
        with pytest.raises(OSError):
            Metrics().serve(port, addr="127.0.0.1")
    finally:
        stop()
    with pytest.raises(urllib.error.URLError):
        scrape(port, timeout=2)
    Metrics().serve(port, addr="127.0.0.1")()  # the port is free again
