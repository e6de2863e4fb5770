"""Fetch heap profiles from a process's pprof ports: concurrently, bounded, verified.

Each fetch has a whole-request deadline on the wall clock (every socket wait of `httpget`
ends by it, so an answer dripped a byte at a time ends too), a size cap, and a share of
one byte budget for every fetch in flight (`over-budget` past it), so what the apps send
never grows the watcher's memory beyond a bound. Every answer that is not a real pprof
profile is named (`http-404`, `html`, `not-http`, `timeout`, `refused`, `connect-error`,
`reset`, `error`, `not-gzip`, `not-pprof`, `too-large`, `over-budget`). Keep-alive
connections can be opened ahead of time with `prepare()`, so the capture at the emergency
skips the TCP handshake.
"""

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sidecar import httpget, profile
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
        self._idle: dict[Endpoint, list[httpget.Connection]] = {}
        self._lock = threading.Lock()

    # -- connection pool -------------------------------------------------------------------

    def _new_connection(
        self, endpoint: Endpoint, timeout: float = CONNECT_TIMEOUT
    ) -> httpget.Connection:
        return httpget.Connection(endpoint.host, endpoint.port, timeout)

    def prepare(self, endpoints: Iterable[Endpoint]) -> None:
        """Open one idle keep-alive connection to each endpoint that has none fit for use
        (best effort): one the server has closed since is replaced."""
        for endpoint in endpoints:
            idle = self._take(endpoint)
            if idle is not None:
                self._release(endpoint, idle)
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

    def _take(self, endpoint: Endpoint) -> httpget.Connection | None:
        """An idle connection still fit to carry a request, or None."""
        while True:
            with self._lock:
                pool = self._idle.get(endpoint)
                connection = pool.pop() if pool else None
            if connection is None or not connection.stale():
                return connection
            connection.close()  # closed by the server, or sent bytes nobody asked for

    def _release(self, endpoint: Endpoint, connection: httpget.Connection) -> None:
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
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchFailure("timeout", f"{endpoint}{target}: no time left to connect")
        try:
            connection = self._new_connection(endpoint, min(CONNECT_TIMEOUT, remaining))
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
        connection: httpget.Connection,
        target: str,
        deadline: float,
    ) -> bytes:
        keep = False
        try:
            response = connection.get(target, deadline, {"Accept-Encoding": "identity"})
            if response.status != 200:
                raise FetchFailure(
                    f"http-{response.status}", f"{endpoint}{target} answered {response.status}"
                )
            if "text/html" in response.header("Content-Type"):
                raise FetchFailure("html", f"{endpoint}{target} answered an HTML page")
            body = self._read_body(connection, response, deadline)
            keep = connection.reusable
            return body
        except FetchFailure:
            raise
        except TimeoutError:
            raise FetchFailure(
                "timeout", f"{endpoint}{target} did not answer within {self._timeout:g}s"
            ) from None
        except httpget.NotHTTP as error:
            raise FetchFailure("not-http", f"{endpoint} did not speak HTTP: {error}") from None
        except (ConnectionResetError, BrokenPipeError) as error:
            raise FetchFailure("reset", f"{endpoint}: {error}") from None
        except (httpget.HTTPError, OSError, ValueError) as error:
            raise FetchFailure("error", f"{endpoint}: {error!r}") from None
        finally:
            if keep:
                self._release(endpoint, connection)
            else:
                connection.close()

    def _read_body(
        self,
        connection: httpget.Connection,
        response: httpget.Response,
        deadline: float,
    ) -> bytes:
        if response.length is not None and response.length > self._max_bytes:
            raise FetchFailure("too-large", f"Content-Length {response.length} > {self._max_bytes}")
        parts: list[bytes] = []
        size = 0
        try:
            for chunk in connection.body(response, deadline):
                if size + len(chunk) > self._max_bytes:
                    raise FetchFailure("too-large", f"more than {self._max_bytes} bytes")
                if not self.budget.take(len(chunk)):
                    raise FetchFailure(
                        "over-budget",
                        f"fetches in flight hold {self.budget.total} bytes already",
                    )
                size += len(chunk)
                parts.append(chunk)
            return b"".join(parts)
        except BaseException:
            self.budget.give_back(size)
            raise
