"""Load generator for POST /mutate over TLS (runs as its own process; prints JSON results).

Raw asyncio streams with HTTP/1.1 keep-alive, so the client costs little next to the
server. `max`: closed loop, N connections each sending back to back. `rate`: open loop at
a fixed request rate; latency is measured from each request's scheduled send time, so
time spent waiting for a free connection counts (no coordinated omission).
"""

import argparse
import asyncio
import json
import ssl
import sys
import time
from pathlib import Path


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def post(self, request: bytes) -> bytes:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await self.reader.readexactly(length)
        if status != b"200":
            raise RuntimeError(f"HTTP {status.decode()}: {body[:200]!r}")
        return body


async def connect(host: str, port: int, context: ssl.SSLContext) -> Connection:
    reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    return Connection(reader, writer)


def build_request(host: str, port: int, body: bytes) -> bytes:
    if not body:  # the floor: a trivial GET over the same TLS connections
        return f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    head = (
        f"POST /mutate HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def run_max(args: argparse.Namespace, context: ssl.SSLContext, request: bytes) -> dict:
    connections = [await connect(args.host, args.port, context) for _ in range(args.connections)]
    done = 0
    latencies: list[float] = []
    stop_at = time.perf_counter() + args.duration

    async def worker(connection: Connection) -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            await connection.post(request)
            latencies.append(time.perf_counter() - sent)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - started
    return {"requests": done, "seconds": elapsed, "latencies": latencies}


async def run_rate(args: argparse.Namespace, context: ssl.SSLContext, request: bytes) -> dict:
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(args.connections):
        idle.put_nowait(await connect(args.host, args.port, context))
    latencies: list[float] = []
    total = int(args.rps * args.duration)
    started = time.perf_counter()

    async def one(scheduled: float) -> None:
        connection = await idle.get()
        try:
            await connection.post(request)
            latencies.append(time.perf_counter() - scheduled)
        finally:
            idle.put_nowait(connection)

    tasks = []
    for index in range(total):
        scheduled = started + index / args.rps
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "seconds": elapsed, "latencies": latencies}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["max", "rate"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--body-file", required=True, help="empty file: GET /healthz instead")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rps", type=float, default=200.0)
    args = parser.parse_args()
    context = ssl.create_default_context(cafile=args.ca_file)
    request = build_request(args.host, args.port, Path(args.body_file).read_bytes())
    runner = run_max if args.mode == "max" else run_rate
    result = asyncio.run(runner(args, context, request))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
