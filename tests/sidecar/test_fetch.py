"""Fetching pprof: a real Go server, and endpoints that misbehave in each known way."""

import gzip
import socket
import time
import tracemalloc

import pytest

from sidecar import profile
from sidecar.fetch import ByteBudget, PprofFetcher
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


@pytest.mark.parametrize("mode", ["drip-headers", "drip-body"])
def test_an_answer_dripped_a_byte_at_a_time_ends_at_the_deadline(mode: str) -> None:
    """FETCH_TIMEOUT is a deadline for the whole request on the wall clock, not a timeout
    per read that a byte every 0.2 s renews for ever."""
    fetcher = PprofFetcher("/debug/pprof/heap", timeout=1.0, max_bytes=1 << 20)
    with bad_server(mode) as (_, port):
        started = time.monotonic()
        result = fetcher.fetch(Endpoint(port, "127.0.0.1"), gc=False)
        elapsed = time.monotonic() - started
    assert result.reason == "timeout", result
    # Generous: the watchdog fires at 1 s; a loaded machine may take a moment more.
    assert elapsed < 5.0
    assert fetcher.budget.used == 0


def test_a_gzip_bomb_is_refused_without_inflating_it() -> None:
    """~300 KB on the wire that inflates to 300 MiB: refused as too large while inflating,
    and the fetch's peak memory stays far below what inflating it would take."""
    fetcher = PprofFetcher("/debug/pprof/heap", timeout=30.0, max_bytes=16 << 20)
    with bad_server("bomb") as (_, port):
        tracemalloc.start()
        try:
            result = fetcher.fetch(Endpoint(port, "127.0.0.1"), gc=False)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.reason == "too-large", result
    assert peak < 64 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"
    assert fetcher.budget.used == 0


def test_fetches_in_flight_share_one_byte_budget(go_pprof_port: int) -> None:
    """The bytes all fetches hold at once are bounded: past the budget a fetch fails as
    over-budget instead of growing the watcher's memory, and gives its share back."""
    fetcher = PprofFetcher("/debug/pprof/heap", 5.0, 1 << 20, budget=ByteBudget(1024))
    assert fetcher.budget.take(1024)  # another fetch holds it all
    result = fetcher.fetch(Endpoint(go_pprof_port, "127.0.0.1"), gc=False)
    assert result.reason == "over-budget"
    fetcher.budget.give_back(1024)
    assert fetcher.budget.used == 0
    roomy = PprofFetcher("/debug/pprof/heap", 5.0, 1 << 20, budget=ByteBudget(1 << 20))
    assert roomy.fetch(Endpoint(go_pprof_port, "127.0.0.1"), gc=False).ok
    assert roomy.budget.used == 0


def test_prepare_replaces_a_connection_the_server_closed(go_pprof_port: int) -> None:
    """A prepared connection closed while idle (a server's idle timeout) is no head start:
    the next prepare() opens a fresh one in its place."""
    endpoint = Endpoint(go_pprof_port, "127.0.0.1")
    fetcher = PprofFetcher(PATH, timeout=5, max_bytes=1 << 24)
    fetcher.prepare([endpoint])
    stale = fetcher._idle[endpoint][0]
    assert stale.sock is not None
    stale.sock.shutdown(socket.SHUT_RDWR)  # as if the server had dropped the idle connection
    fetcher.prepare([endpoint])
    assert len(fetcher._idle[endpoint]) == 1
    fresh = fetcher._idle[endpoint][0]
    assert fresh is not stale and stale.sock is None  # closed, not leaked
    assert fetcher.fetch(endpoint, gc=False).ok
    assert fetcher._idle[endpoint] == [fresh]
    fetcher.close()
