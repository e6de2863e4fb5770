"""Fetch heap profiles from a process's pprof ports: concurrently, bounded, verified.

Each fetch has a whole-request deadline on the wall clock (a watchdog shuts the socket down
when it passes, so an answer dripped a byte at a time ends too), a size cap, and a share of
one byte budget for every fetch in flight (`over-budget` past it), so what the apps send
never grows the watcher's memory beyond a bound. Every answer that is not a real pprof
profile is named (`http-404`, `html`, `not-http`, `timeout`, `refused`, `not-gzip`,
`not-pprof`, `too-large`, `over-budget`). Keep-alive connections can be opened ahead of time with
`prepare()`, so the capture at the emergency skips the TCP handshake.
"""

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass

from sidecar import profile
from sidecar.ports import Endpoint

CONNECT_TIMEOUT = 0.5
_CHUNK = 64 * 1024
# Bytes of answers all fetches in flight may hold together: a few real profiles are a few
# MiB at most, and the watcher's memory limit is 128 MiB.
DEFAULT_BUDGET_BYTES = 32 * 1024 * 1024


class ByteBudget:
    """Bytes shared by every fetch in flight; a fetch that cannot take its next chunk fails."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._used = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        with self._lock:
            if self._used + size > self.total:
                return False
            self._used += size
            return True

    def give_back(self, size: int) -> None:
        with self._lock:
            self._used -= size

    @property
    def used(self) -> int:
        with self._lock:
            return self._used


class _Watchdog:
    """Shuts a connection's socket down at the deadline: every blocked read then returns,
    however the peer times its bytes."""

    def __init__(self, connection: http.client.HTTPConnection, deadline: float) -> None:
        self.fired = False
        self._connection = connection
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        sock = self._connection.sock
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


@dataclass(frozen=True)
class FetchResult:
    endpoint: Endpoint
    gc: bool  # fetched with ?gc=1
    data: bytes | None  # the verified profile, or None
    reason: str  # "ok", or why there is no profile (a short label, used in metrics)
    detail: str  # human-readable detail for the log
    started: float  # monotonic seconds
    seconds: float

    @property
    def ok(self) -> bool:
        return self.data is not None


class FetchFailure(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PprofFetcher:
    def __init__(
        self,
        path: str,
        timeout: float,
        max_bytes: int,
        budget: ByteBudget | None = None,
    ) -> None:
        self._path = path
        self._timeout = timeout
        self._max_bytes = max_bytes
        self.budget = budget or ByteBudget(max(DEFAULT_BUDGET_BYTES, max_bytes))
        self._idle: dict[Endpoint, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    # -- connection pool -------------------------------------------------------------------

    def _new_connection(self, endpoint: Endpoint) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(endpoint.host, endpoint.port, CONNECT_TIMEOUT)
        connection.connect()
        return connection

    def prepare(self, endpoints: Iterable[Endpoint]) -> None:
        """Open one idle keep-alive connection to each endpoint that has none (best effort)."""
        for endpoint in endpoints:
            with self._lock:
                if self._idle.get(endpoint):
                    continue
            try:
                connection = self._new_connection(endpoint)
            except OSError:
                continue  # not listening yet; the capture connects afresh
            self._release(endpoint, connection)

    def forget(self, endpoints: Iterable[Endpoint]) -> None:
        """Close idle connections to endpoints no longer watched."""
        for endpoint in endpoints:
            with self._lock:
                connections = self._idle.pop(endpoint, [])
            for connection in connections:
                connection.close()

    def _take(self, endpoint: Endpoint) -> http.client.HTTPConnection | None:
        with self._lock:
            pool = self._idle.get(endpoint)
            return pool.pop() if pool else None

    def _release(self, endpoint: Endpoint, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.setdefault(endpoint, []).append(connection)

    def close(self) -> None:
        with self._lock:
            pools, self._idle = self._idle, {}
        for connections in pools.values():
            for connection in connections:
                connection.close()

    # -- fetching --------------------------------------------------------------------------

    def fetch(self, endpoint: Endpoint, gc: bool) -> FetchResult:
        started = time.monotonic()
        try:
            data = self._fetch_verified(endpoint, gc, started + self._timeout)
        except FetchFailure as failure:
            elapsed = time.monotonic() - started
            return FetchResult(endpoint, gc, None, failure.reason, failure.detail, started, elapsed)
        return FetchResult(endpoint, gc, data, "ok", "", started, time.monotonic() - started)

    def fetch_all(
        self,
        endpoints: list[Endpoint],
        gc: bool,
        on_result: Callable[[FetchResult], None] | None = None,
    ) -> list[FetchResult]:
        """Fetch from every endpoint at once; returns when all have answered or timed out.

        `on_result` runs on the fetching thread as soon as each answer is in, so one hanging
        port does not hold back saving another port's profile."""
        results: list[FetchResult | None] = [None] * len(endpoints)

        def run(index: int, endpoint: Endpoint) -> None:
            result = self.fetch(endpoint, gc)
            results[index] = result
            if on_result is not None:
                on_result(result)

        if len(endpoints) == 1:
            run(0, endpoints[0])
        else:
            threads = [
                threading.Thread(target=run, args=(i, e), name=f"fetch-{e.port}", daemon=True)
                for i, e in enumerate(endpoints)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return [result for result in results if result is not None]

    def _fetch_verified(self, endpoint: Endpoint, gc: bool, deadline: float) -> bytes:
        body = self._get(endpoint, self._path + ("?gc=1" if gc else ""), deadline)
        try:
            profile.check(body)
        except profile.NotAProfile as error:
            reason, _, detail = str(error).partition(":")
            raise FetchFailure(reason, detail.strip() or f"{len(body)} bytes") from None
        finally:
            # A profile is handed on to be saved at once: its share of the budget goes back.
            self.budget.give_back(len(body))
        return body

    def _get(self, endpoint: Endpoint, target: str, deadline: float) -> bytes:
        connection = self._take(endpoint)
        if connection is not None:
            try:
                return self._request(endpoint, connection, target, deadline)
            except FetchFailure as failure:
                # A prepared connection the server closed while idle: one fresh try.
                if failure.reason not in ("not-http", "reset", "error"):
                    raise
        try:
            connection = self._new_connection(endpoint)
        except ConnectionRefusedError:
            raise FetchFailure("refused", f"nothing listens on {endpoint}") from None
        except TimeoutError:
            raise FetchFailure("timeout", f"connect to {endpoint} timed out") from None
        except OSError as error:
            raise FetchFailure("connect-error", f"{endpoint}: {error}") from None
        return self._request(endpoint, connection, target, deadline)

    def _request(
        self,
        endpoint: Endpoint,
        connection: http.client.HTTPConnection,
        target: str,
        deadline: float,
    ) -> bytes:
        keep = False
        watchdog = _Watchdog(connection, deadline)
        try:
            _set_timeout(connection, deadline)
            connection.request("GET", target, headers={"Accept-Encoding": "identity"})
            response = connection.getresponse()
            content_type = response.getheader("Content-Type", "")
            if response.status != 200:
                raise FetchFailure(
                    f"http-{response.status}", f"{endpoint}{target} answered {response.status}"
                )
            if "text/html" in content_type:
                raise FetchFailure("html", f"{endpoint}{target} answered an HTML page")
            body = self._read_body(connection, response, deadline)
            keep = not response.will_close and not watchdog.fired
            return body
        except FetchFailure:
            raise
        except (TimeoutError, http.client.HTTPException, OSError) as error:
            if watchdog.fired or isinstance(error, TimeoutError):
                raise FetchFailure(
                    "timeout", f"{endpoint}{target} did not answer within {self._timeout:g}s"
                ) from None
            if isinstance(error, http.client.BadStatusLine | http.client.LineTooLong):
                raise FetchFailure(
                    "not-http", f"{endpoint} did not speak HTTP: {error!r}"
                ) from None
            if isinstance(error, ConnectionResetError | BrokenPipeError):
                raise FetchFailure("reset", f"{endpoint}: {error}") from None
            raise FetchFailure("error", f"{endpoint}: {error!r}") from None
        finally:
            watchdog.cancel()
            if keep:
                self._release(endpoint, connection)
            else:
                connection.close()

    def _read_body(
        self,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        deadline: float,
    ) -> bytes:
        length = response.getheader("Content-Length")
        if length and length.isdigit() and int(length) > self._max_bytes:
            raise FetchFailure("too-large", f"Content-Length {length} > {self._max_bytes}")
        parts: list[bytes] = []
        size = 0
        try:
            while True:
                _set_timeout(connection, deadline)
                chunk = response.read(_CHUNK)
                if not chunk:
                    return b"".join(parts)
                if size + len(chunk) > self._max_bytes:
                    raise FetchFailure("too-large", f"more than {self._max_bytes} bytes")
                if not self.budget.take(len(chunk)):
                    raise FetchFailure(
                        "over-budget",
                        f"fetches in flight hold {self.budget.total} bytes already",
                    )
                size += len(chunk)
                parts.append(chunk)
        except BaseException:
            self.budget.give_back(size)
            raise


def _set_timeout(connection: http.client.HTTPConnection, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    if connection.sock is not None:
        connection.sock.settimeout(remaining)
    else:
        connection.timeout = remaining
