"""A pprof endpoint that misbehaves, as a process of its own (run: python bad_pprof_server.py
MODE [BALLAST_MIB]). Modes: hang (accepts, never answers), 404, html, not-http (an SSH
banner), not-pprof (200 with gzip'd text), bomb (200 with ~300 KB of gzip that inflates to
300 MiB), drip-headers and drip-body (one byte every 0.2 s, for ever). It prints
`listening <port>` once ready and exits when its parent (the test) closes its stdin."""

import gzip
import socket
import sys
import threading
import time
import zlib

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


def answer(mode: str, connection: socket.socket) -> None:
    with connection:
        connection.recv(65536)
        if mode in DRIP:
            for index in range(len(DRIP[mode])):
                connection.sendall(DRIP[mode][index : index + 1])
                time.sleep(0.2)  # the attack: a byte at a time, slow enough to seem alive
            return
        if mode == "bomb":
            connection.sendall(BOMB)
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
