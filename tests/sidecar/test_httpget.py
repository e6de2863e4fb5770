"""The plain-socket HTTP client under the pprof fetch: a real Go net/http server, and servers
that break HTTP/1.1 framing or its bounds in each way we know."""

import subprocess
import sys
import time

import pytest

from sidecar import httpget, profile
from sidecar.fetch import PprofFetcher
from sidecar.ports import Endpoint
from tests.sidecar.bad_pprof_server import profile_body
from tests.sidecar.servers import bad_server

PATH = "/debug/pprof/heap"


def read_all(connection: httpget.Connection, response: httpget.Response, deadline: float) -> bytes:
    return b"".join(connection.body(response, deadline))


def test_go_answers_chunked_and_by_length_on_one_kept_connection(go_pprof_port: int) -> None:
    """Go's net/http answers chunked once a body outgrows its 2 KiB buffer (the pprof index
    page here) and by Content-Length when it does not (the small gzip'd heap profile): both
    are read in full and the one keep-alive connection carries every request."""
    connection = httpget.Connection("127.0.0.1", go_pprof_port, 1.0)
    try:
        deadline = time.monotonic() + 10
        index = connection.get("/debug/pprof/", deadline)
        assert (index.status, index.chunked, index.length) == (200, True, None)
        page = read_all(connection, index, deadline)
        assert page.startswith(b"<html>") and page.rstrip().endswith(b"</html>")
        assert b"heap" in page
        assert connection.reusable
        assert connection.sock is not None
        local = connection.sock.getsockname()
        heap = connection.get(PATH, deadline)
        assert heap.status == 200 and not heap.chunked and heap.length is not None
        data = read_all(connection, heap, deadline)
        assert len(data) == heap.length
        profile.check(data)
        assert connection.reusable and connection.sock.getsockname() == local
        missing = connection.get("/debug/pprof/nope", deadline)
        assert missing.status == 404
        assert read_all(connection, missing, deadline) == b"Unknown profile\n"
        assert connection.sock.getsockname() == local
    finally:
        connection.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_ipv4_and_ipv6_requests_carry_a_host_header(go_pprof_port: int, host: str) -> None:
    connection = httpget.Connection(host, go_pprof_port, 1.0)
    try:
        deadline = time.monotonic() + 10
        # Go answers 400 to an HTTP/1.1 request without a valid Host header.
        response = connection.get("/debug/pprof/cmdline", deadline)
        assert response.status == 200, response
        assert b"go-memory-leak" in read_all(connection, response, deadline)
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("long-status", "not-http"),  # 20 KB status line
        ("long-header", "not-http"),  # one 100 KB header line
        ("big-header-block", "not-http"),  # 50 header lines of 4 KB: 200 KB held otherwise
        ("many-headers", "not-http"),  # 150 header lines
        ("bad-chunk-size", "not-http"),  # "zz"
        ("long-chunk-line", "not-http"),  # a 100 KB chunk extension
        ("two-lengths", "not-http"),  # Content-Length 10 and 20
        ("endless-interim", "not-http"),  # 1000 answers "100 Continue"
        ("huge-length", "too-large"),  # a 5000-digit Content-Length
        ("short-body", "error"),  # closed 99990 bytes short of its Content-Length
        ("drip-chunk-line", "timeout"),  # "0000..." a byte every 0.2 s
    ],
)
def test_broken_framing_is_named_within_the_deadline(mode: str, reason: str) -> None:
    fetcher = PprofFetcher(PATH, timeout=1.0, max_bytes=1 << 20)
    with bad_server(mode) as (_, port):
        started = time.monotonic()
        result = fetcher.fetch(Endpoint(port, "127.0.0.1"), gc=False)
        elapsed = time.monotonic() - started
    assert (result.reason, result.data) == (reason, None), result
    assert result.detail
    assert elapsed < 5.0  # the deadline is 1 s; a loaded machine may take a moment more
    assert fetcher.budget.used == 0
    assert not fetcher._idle.get(Endpoint(port, "127.0.0.1"))


@pytest.mark.parametrize("mode", ["chunked", "split", "to-close", "interim"])
def test_every_legal_framing_yields_the_exact_profile(mode: str) -> None:
    """Chunked with extensions and trailers, one TCP segment per byte, delimited by the
    close, after 1xx answers: the body is the profile the server sent, byte for byte."""
    fetcher = PprofFetcher(PATH, timeout=10.0, max_bytes=1 << 20)
    with bad_server(mode) as (_, port):
        result = fetcher.fetch(Endpoint(port, "127.0.0.1"), gc=False)
    assert result.reason == "ok", result
    assert result.data == profile_body()
    assert fetcher.budget.used == 0


@pytest.mark.parametrize("mode", ["chunked", "split"])
def test_a_chunked_answer_keeps_the_connection_for_the_next_fetch(mode: str) -> None:
    fetcher = PprofFetcher(PATH, timeout=10.0, max_bytes=1 << 20)
    with bad_server(mode) as (_, port):
        endpoint = Endpoint(port, "127.0.0.1")
        fetcher.prepare([endpoint])
        prepared = fetcher._idle[endpoint][0]
        for _ in range(3):
            result = fetcher.fetch(endpoint, gc=False)
            assert result.data == profile_body(), result
            assert fetcher._idle[endpoint] == [prepared]
        fetcher.close()


def test_bytes_past_the_body_do_not_answer_the_next_request() -> None:
    """A server sends, after a profile framed by Content-Length, a second answer nobody asked
    for (a 404). Reusing that connection would take the 404 as the answer to the next
    request; the connection is closed instead, and the next fetch asks afresh."""
    fetcher = PprofFetcher(PATH, timeout=5.0, max_bytes=1 << 20)
    with bad_server("smuggle") as (_, port):
        endpoint = Endpoint(port, "127.0.0.1")
        fetcher.prepare([endpoint])
        for _ in range(3):
            result = fetcher.fetch(endpoint, gc=False)
            assert (result.reason, result.data) == ("ok", profile_body())
            assert not fetcher._idle.get(endpoint)
    fetcher.close()


def test_the_watcher_loads_neither_ssl_nor_email_nor_http_client() -> None:
    """http.client loads OpenSSL and the email package: megabytes of resident memory the
    watcher would carry while it waits (issue 11)."""
    heavy = ("ssl", "_ssl", "email", "http.client", "http.server", "prometheus_client")
    code = (
        f"import sys, sidecar.__main__; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    assert loaded == ""
