"""Fetching pprof: a real Go server, and endpoints that misbehave in each known way."""

import gzip
import socket
import time

import pytest

from sidecar import profile
from sidecar.fetch import PprofFetcher
from sidecar.ports import Endpoint
from tests.sidecar.servers import bad_server

PATH = "/debug/pprof/heap"


def test_real_go_profile_is_accepted(go_pprof_port: int) -> None:
    fetcher = PprofFetcher(PATH, timeout=5, max_bytes=1 << 24)
    result = fetcher.fetch(Endpoint(go_pprof_port, "127.0.0.1"), gc=False)
    assert result.reason == "ok", result.detail
    assert result.data is not None and result.data[:2] == b"\x1f\x8b"
    gc_result = fetcher.fetch(Endpoint(go_pprof_port, "::1"), gc=True)
    assert gc_result.ok, gc_result.detail
    fetcher.close()


def test_prepared_connection_is_reused_and_survives_server_close(go_pprof_port: int) -> None:
    endpoint = Endpoint(go_pprof_port, "127.0.0.1")
    fetcher = PprofFetcher(PATH, timeout=5, max_bytes=1 << 24)
    fetcher.prepare([endpoint])
    prepared = fetcher._idle[endpoint][0]
    assert fetcher.fetch(endpoint, gc=False).ok
    assert fetcher._idle[endpoint] == [prepared]  # same keep-alive connection, back in the pool
    assert prepared.sock is not None
    prepared.sock.shutdown(socket.SHUT_RDWR)  # as if the server had dropped the idle connection
    assert fetcher.fetch(endpoint, gc=False).ok  # one fresh try, transparently
    fetcher.close()


def test_too_large_is_refused(go_pprof_port: int) -> None:
    fetcher = PprofFetcher(PATH, timeout=5, max_bytes=64)
    result = fetcher.fetch(Endpoint(go_pprof_port, "127.0.0.1"), gc=False)
    assert (result.reason, result.data) == ("too-large", None)


def test_wrong_path_is_a_404(go_pprof_port: int) -> None:
    fetcher = PprofFetcher("/debug/pprof/nope", timeout=5, max_bytes=1 << 24)
    assert fetcher.fetch(Endpoint(go_pprof_port, "127.0.0.1"), gc=False).reason == "http-404"


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("404", "http-404"),
        ("html", "html"),
        ("not-http", "not-http"),
        ("not-pprof", "not-pprof"),
        ("hang", "timeout"),
    ],
)
def test_misbehaving_endpoint_is_named(mode: str, reason: str) -> None:
    with bad_server(mode) as (_, port):
        fetcher = PprofFetcher(PATH, timeout=0.5, max_bytes=1 << 24)
        result = fetcher.fetch(Endpoint(port, "127.0.0.1"), gc=False)
    assert (result.reason, result.data) == (reason, None)
    assert result.detail
    assert result.seconds < 2


def test_nothing_listening_is_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = PprofFetcher(PATH, 1, 1 << 20).fetch(Endpoint(port, "127.0.0.1"), gc=False)
    assert result.reason == "refused"


def test_hanging_port_does_not_hold_back_a_good_one(go_pprof_port: int) -> None:
    saved_at: dict[int, float] = {}
    with bad_server("hang") as (_, hang_port):
        fetcher = PprofFetcher(PATH, timeout=2, max_bytes=1 << 24)
        started = time.monotonic()
        results = fetcher.fetch_all(
            [Endpoint(hang_port, "127.0.0.1"), Endpoint(go_pprof_port, "127.0.0.1")],
            gc=False,
            on_result=lambda r: saved_at.setdefault(r.endpoint.port, time.monotonic() - started),
        )
    assert {r.endpoint.port: r.reason for r in results} == {
        hang_port: "timeout",
        go_pprof_port: "ok",
    }
    assert saved_at[go_pprof_port] < 1.0 <= saved_at[hang_port]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<html>hi</html>", "not-gzip"),
        (gzip.compress(b"plain text is not protobuf"), "not-pprof"),
        (gzip.compress(b""), "not-pprof"),
        (gzip.compress(b"\x1f\x8b")[:10], "not-gzip"),
    ],
)
def test_profile_check_rejects(data: bytes, reason: str) -> None:
    with pytest.raises(profile.NotAProfile, match=f"^{reason}"):
        profile.check(data)
