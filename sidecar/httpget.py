"""A small HTTP/1.1 GET client on plain sockets, for reading pprof from an untrusted peer.

It replaces http.client, which loads `ssl` (OpenSSL) and the `email` package: megabytes of
resident memory the watcher would carry while it waits. Everything the peer sends is
treated as hostile: the status line, each header line, the header block and each chunk-size
line have a bound, a body is framed by Content-Length, chunked transfer-coding or the close
of the connection, and every socket operation waits only until the request's deadline, so
an answer dripped a byte at a time ends when the deadline passes. Whatever breaks HTTP/1.x
or its framing is `NotHTTP`; a body cut short is `Truncated`; the deadline is `TimeoutError`;
socket failures are the OSError the socket raised.

A connection is reusable (keep-alive) only after a complete answer that leaves no byte
unread: bytes past the framed body could otherwise pass for the answer to the next request.
"""

import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

MAX_STATUS_LINE = 8 * 1024
MAX_HEADER_BYTES = 64 * 1024  # the whole block of header lines (and of trailer lines)
MAX_HEADER_LINES = 100
MAX_CHUNK_LINE = 1024  # "<hex size>[;extensions]"
MAX_INTERIM = 8  # 1xx answers skipped before the real one
_MAX_HEX_DIGITS = 16  # a chunk of 2**64 bytes is already past any cap
# Content-Length digits parsed; a longer number is past any cap the caller can have.
_MAX_LENGTH_DIGITS = 18
TOO_LONG = 10**18
_RECV = 64 * 1024
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_STALE_EVENTS = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | select.POLLNVAL


class HTTPError(Exception):
    """The answer cannot be read as HTTP/1.x."""


class NotHTTP(HTTPError):
    """The peer's bytes are not HTTP/1.x, break its framing, or exceed a bound."""


class Truncated(HTTPError):
    """The connection ended inside a body."""


@dataclass(frozen=True)
class Response:
    version: str  # "HTTP/1.0" or "HTTP/1.1"
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names; repeated fields joined by ", "
    length: int | None  # Content-Length (TOO_LONG when absurdly long); None when not given
    chunked: bool
    will_close: bool  # the server closes after this answer (or the body ends at the close)

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


class Connection:
    """One TCP connection to host:port that sends GET requests and reads their answers."""

    def __init__(self, host: str, port: int, connect_timeout: float) -> None:
        self.host = host
        self.port = port
        self.sock: socket.socket | None = socket.create_connection((host, port), connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()
        self._reusable = True  # idle, nothing owed: a request may be sent

    @property
    def reusable(self) -> bool:
        """A complete answer was read, the server keeps the connection, nothing is left over."""
        return self._reusable and not self._buffer and self.sock is not None

    def stale(self) -> bool:
        """An idle connection with something to read (bytes nobody asked for, the server's
        close, an error) cannot carry the next request."""
        if not self.reusable or self.sock is None:
            return True
        poller = select.poll()
        poller.register(self.sock, _STALE_EVENTS)
        return bool(poller.poll(0))

    def close(self) -> None:
        self._reusable = False
        self._buffer.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # -- request and answer ----------------------------------------------------------------

    def get(self, target: str, deadline: float, headers: dict[str, str] | None = None) -> Response:
        """Send `GET target` and read the answer's head (its body comes from `body`)."""
        if not (target.startswith("/") and target.isascii() and target.isprintable()) or (
            " " in target
        ):
            raise ValueError(f"not a request target: {target!r}")
        if not self._reusable:
            raise RuntimeError("the connection is busy or closed")
        self._reusable = False  # until the whole answer is read
        host = f"[{self.host}]" if ":" in self.host else self.host
        lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), deadline)
        for _ in range(MAX_INTERIM + 1):
            response = self._read_head(deadline)
            if response.status >= 200:
                return response
            if response.status == 101:
                raise NotHTTP("101 Switching Protocols to a plain GET")
        raise NotHTTP(f"more than {MAX_INTERIM} interim (1xx) answers")

    def body(self, response: Response, deadline: float) -> Iterator[bytes]:
        """The body of `response` in pieces of at most 64 KiB, framed as its head says."""
        if response.status in (204, 304):
            pieces: Iterator[bytes] = iter(())
        elif response.chunked:
            pieces = self._chunked(deadline)
        elif response.length is not None:
            pieces = self._counted(response.length, deadline)
        else:
            pieces = self._to_close(deadline)
        yield from pieces
        self._reusable = not response.will_close

    def _read_head(self, deadline: float) -> Response:
        line = self._line(MAX_STATUS_LINE, deadline)
        if line is None:
            raise NotHTTP("closed without an answer" if not self._buffer else "status line cut")
        version, _, rest = line.partition(b" ")
        status, _, reason = rest.partition(b" ")
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise NotHTTP(f"status line {bytes(line[:80])!r}")
        if len(status) != 3 or not status.isdigit() or status[0] == ord("0"):
            raise NotHTTP(f"status {bytes(status[:80])!r}")
        headers = self._fields(deadline)
        code = int(status)
        chunked, length = _framing(headers)
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        will_close = (
            "close" in tokens
            or (version == b"HTTP/1.0" and "keep-alive" not in tokens)
            or (code >= 200 and code not in (204, 304) and not chunked and length is None)
        )
        return Response(
            version.decode(), code, reason.decode("latin-1"), headers, length, chunked, will_close
        )

    def _fields(self, deadline: float) -> dict[str, str]:
        """Header (or trailer) lines up to the empty line, within the block's bounds."""
        fields: dict[str, str] = {}
        last = ""
        budget = MAX_HEADER_BYTES
        for _ in range(MAX_HEADER_LINES + 1):
            line = self._line(budget, deadline)
            if line is None:
                raise NotHTTP("closed inside the header block")
            budget -= len(line) + 2
            if not line:
                return fields
            if line[0] in b" \t":  # obsolete line folding: more of the previous value
                if not last:
                    raise NotHTTP("header block starts with a continuation line")
                fields[last] += " " + line.strip(b" \t").decode("latin-1")
                continue
            name, colon, value = line.partition(b":")
            if not colon or not name or not _TOKEN.issuperset(name):
                raise NotHTTP(f"header line {bytes(line[:80])!r}")
            last = name.decode("ascii").lower()
            text = value.strip(b" \t").decode("latin-1")
            fields[last] = f"{fields[last]}, {text}" if last in fields else text
        raise NotHTTP(f"more than {MAX_HEADER_LINES} header lines")

    def _counted(self, length: int, deadline: float) -> Iterator[bytes]:
        left = length
        while left > 0:
            piece = self._some(min(left, _RECV), deadline)
            if not piece:
                raise Truncated(f"body ended {left} of {length} bytes short")
            left -= len(piece)
            yield piece

    def _to_close(self, deadline: float) -> Iterator[bytes]:
        while piece := self._some(_RECV, deadline):
            yield piece

    def _chunked(self, deadline: float) -> Iterator[bytes]:
        while True:
            line = self._line(MAX_CHUNK_LINE, deadline)
            if line is None:
                raise Truncated("body ended before its last chunk")
            digits = bytes(line.partition(b";")[0].strip(b" \t"))
            if not digits or len(digits) > _MAX_HEX_DIGITS or not _HEX.issuperset(digits):
                raise NotHTTP(f"chunk size {bytes(line[:80])!r}")
            size = int(digits, 16)
            if size == 0:
                self._fields(deadline)  # trailers, read and dropped
                return
            yield from self._counted(size, deadline)
            end = self._line(2, deadline)
            if end is None:
                raise Truncated("body ended after a chunk's data")
            if end:
                raise NotHTTP("chunk data longer than its size")

    # -- bytes -----------------------------------------------------------------------------

    def _line(self, limit: int, deadline: float) -> bytearray | None:
        """The next line (CRLF or LF stripped) of at most `limit` bytes; None at the close."""
        searched = 0
        while True:
            end = self._buffer.find(b"\n", searched)
            if end >= 0:
                if end > limit:
                    raise NotHTTP(f"a line longer than {limit} bytes")
                line = self._buffer[:end]
                del self._buffer[: end + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._buffer) > limit:
                raise NotHTTP(f"a line longer than {limit} bytes")
            searched = len(self._buffer)
            if not self._fill(deadline):
                return None

    def _some(self, most: int, deadline: float) -> bytes:
        """Up to `most` bytes: what is buffered, else one read; b"" at the close."""
        if not self._buffer and not self._fill(deadline):
            return b""
        piece = bytes(self._buffer[:most])
        del self._buffer[:most]
        return piece

    def _fill(self, deadline: float) -> bool:
        sock = self._socket(deadline)
        data = sock.recv(_RECV)
        self._buffer += data
        return bool(data)

    def _send(self, data: bytes, deadline: float) -> None:
        self._socket(deadline).sendall(data)

    def _socket(self, deadline: float) -> socket.socket:
        """The socket, set to wait no longer than the deadline: however the peer times its
        bytes, each wait ends by then."""
        if self.sock is None:
            raise OSError("connection closed")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(remaining)
        return self.sock


def _framing(headers: dict[str, str]) -> tuple[bool, int | None]:
    """(chunked, Content-Length) from the header fields, or NotHTTP when they contradict."""
    coding = headers.get("transfer-encoding")
    if coding is not None:
        if coding.strip().lower() != "chunked":
            raise NotHTTP(f"Transfer-Encoding {coding[:80]!r}")
        return True, None  # a Content-Length beside it is ignored (RFC 9112 6.3)
    raw = headers.get("content-length")
    if raw is None:
        return False, None
    values = {value.strip() for value in raw.split(",")}
    if len(values) != 1:
        raise NotHTTP(f"Content-Length {raw[:80]!r}")
    digits = values.pop()
    if not digits or not digits.isascii() or not digits.isdigit():
        raise NotHTTP(f"Content-Length {raw[:80]!r}")
    stripped = digits.lstrip("0") or "0"
    return False, int(stripped) if len(stripped) <= _MAX_LENGTH_DIGITS else TOO_LONG
