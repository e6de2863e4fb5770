"""A pprof endpoint that misbehaves, as a process of its own (run: python bad_pprof_server.py
MODE [BALLAST_MIB]). Modes: hang (accepts, never answers), 404, html, not-http (an SSH
banner), not-pprof (200 with gzip'd text), bomb (200 with ~300 KB of gzip that inflates to
300 MiB), drip-headers and drip-body (one byte every 0.2 s, for ever), and the HTTP framing
ones in FRAMING (an oversized status line, header line or header block, too many headers,
bad or endless chunk-size lines, contradicting or absurd lengths, a short body, endless 1xx
answers; and good answers framed every legal way: chunked, split into one send per byte,
delimited by the close, after 1xx answers). KEEP_ALIVE modes answer every request on a
connection; `smuggle` sends a second, unasked-for answer (a 404) after each profile. It prints
`listening <port>` once ready and exits when its parent (the test) closes its stdin."""

import gzip
import random
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable
from contextlib import suppress

ANSWERS = {
    "404": b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\r\n"
    b"404 page not found\n",
    "html": b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 38\r\n"
    b"\r\n<html><body>Welcome to nginx</body>\n",
    "not-http": b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n",
}


def not_pprof_answer() -> bytes:
    body = gzip.compress(b'{"error": "this is JSON, not a profile"}')
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def bomb_answer() -> bytes:
    """A profile's start (a string_table entry) whose one string is 300 MiB of zeros."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    size = 300 * 1024 * 1024
    length = bytearray()
    while True:  # the protobuf varint of `size`
        length.append((size & 0x7F) | (0x80 if size > 0x7F else 0))
        size >>= 7
        if not size:
            break
    zeros = bytes(1024 * 1024)
    parts = [deflater.compress(b"\x32" + bytes(length))]  # field 6, length-delimited
    parts += [deflater.compress(zeros) for _ in range(300)]
    body = b"".join(parts) + deflater.flush()
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


DRIP = {
    "drip-headers": b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100_000,
    "drip-body": b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n\x1f\x8b" + bytes(99_998),
}


BOMB = b""


def profile_body() -> bytes:
    """A valid gzip'd profile (sample_type, and a string of 6000 random bytes so the gzip is
    large enough to span several chunks); the same bytes on every call."""
    filler = random.Random(7).randbytes(6000)
    message = b"\x0a\x00\x32\x00\x32" + _varint(len(filler)) + filler
    return gzip.compress(message, mtime=0)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"


def counted(body: bytes, extra: bytes = b"") -> bytes:
    return OK_HEAD + extra + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def chunked(body: bytes) -> bytes:
    """Chunks of 1, 7, 4096 bytes and the rest, with an extension, upper- and lower-case hex
    and a trailer: everything a reader of chunked bodies must take."""
    sizes = [1, 7, 4096, len(body) - 4104]
    out = [OK_HEAD, b"Transfer-Encoding: chunked\r\n\r\n"]
    offset = 0
    for index, size in enumerate(sizes):
        digits = f"{size:X}" if index % 2 else f"{size:x}"
        out.append(f"{digits};ext={index}\r\n".encode() + body[offset : offset + size] + b"\r\n")
        offset += size
    out.append(b"0\r\nX-Trailer: done\r\n\r\n")
    return b"".join(out)


CHUNKED_HEAD = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

FRAMING: dict[str, Callable[[], bytes]] = {
    "long-status": lambda: b"HTTP/1.1 200 " + b"A" * 20_000 + b"\r\n\r\n",
    "long-header": lambda: counted(profile_body(), b"X-Big: " + b"a" * 100_000 + b"\r\n"),
    "big-header-block": lambda: counted(
        profile_body(), b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 4000) for i in range(50))
    ),
    "many-headers": lambda: counted(
        profile_body(), b"".join(b"X-N-%d: 1\r\n" % i for i in range(150))
    ),
    "bad-chunk-size": lambda: CHUNKED_HEAD + b"zz\r\n" + b"x" * 100 + b"\r\n0\r\n\r\n",
    "long-chunk-line": lambda: CHUNKED_HEAD + b"1;" + b"x" * 100_000 + b"\r\nx\r\n0\r\n\r\n",
    "two-lengths": lambda: (
        OK_HEAD + b"Content-Length: 10\r\nContent-Length: 20\r\n\r\n" + b"x" * 20
    ),
    "huge-length": lambda: OK_HEAD + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n" + b"x" * 100,
    "short-body": lambda: OK_HEAD + b"Content-Length: 100000\r\n\r\n" + profile_body()[:10],
    "endless-interim": lambda: CONTINUE * 1000,
    "to-close": lambda: OK_HEAD + b"\r\n" + profile_body(),
    "interim": lambda: CONTINUE * 2 + counted(profile_body()),
    "chunked": lambda: chunked(profile_body()),
    "split": lambda: chunked(profile_body()),
    "smuggle": lambda: counted(profile_body()) + ANSWERS["404"],
}
KEEP_ALIVE = {"chunked", "split", "smuggle"}
DRIP_CHUNK_LINE = CHUNKED_HEAD, b"0"  # the head at once, then "0" for ever, a byte each 0.2 s


def read_request(connection: socket.socket) -> bool:
    """Read one request's head (bounded); False when the client has closed."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        more = connection.recv(65536)
        if not more:
            return False
        data += more
    return True


def answer(mode: str, connection: socket.socket) -> None:
    with connection, suppress(OSError):  # the client closing mid-answer ends the answer
        if mode in KEEP_ALIVE:
            reply = FRAMING[mode]()
            while read_request(connection):
                if mode == "split":  # one segment per byte: every split a reader can meet
                    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    for index in range(len(reply)):
                        connection.sendall(reply[index : index + 1])
                else:
                    connection.sendall(reply)
            return
        connection.recv(65536)
        if mode == "drip-chunk-line":
            connection.sendall(DRIP_CHUNK_LINE[0])
            while True:
                connection.sendall(DRIP_CHUNK_LINE[1])
                time.sleep(0.2)  # the attack: a chunk-size line that never ends
        if mode in DRIP:
            for index in range(len(DRIP[mode])):
                connection.sendall(DRIP[mode][index : index + 1])
                time.sleep(0.2)  # the attack: a byte at a time, slow enough to seem alive
            return
        if mode == "bomb":
            connection.sendall(BOMB)
            return
        if mode in FRAMING:
            connection.sendall(FRAMING[mode]())
            return
        connection.sendall(not_pprof_answer() if mode == "not-pprof" else ANSWERS[mode])


def serve(mode: str, listener: socket.socket, held: list[socket.socket]) -> None:
    while True:
        connection, _ = listener.accept()
        if mode == "hang":
            held.append(connection)  # read nothing, answer nothing, keep it open
            continue
        # Each connection on its own thread, as real servers do: the watcher's idle
        # connection, opened ahead of time, must not hold back its request on another.
        threading.Thread(target=answer, args=(mode, connection), daemon=True).start()


def main() -> None:
    global BOMB
    mode = sys.argv[1]
    if mode == "bomb":
        BOMB = bomb_answer()
    ballast = bytearray(int(sys.argv[2]) * 1024 * 1024 if len(sys.argv) > 2 else 0)
    for index in range(0, len(ballast), 4096):
        ballast[index] = 1  # touch every page so it counts against the cgroup
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    threading.Thread(target=serve, args=(mode, listener, held), daemon=True).start()
    print(f"listening {listener.getsockname()[1]}", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or dies)


if __name__ == "__main__":
    main()
