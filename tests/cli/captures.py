"""Real dumps for the CLI's tests: heap profiles fetched from the running demo program
(examples/go-memory-leak), saved by the watcher's own spool (sidecar/spool.py) under the
documented key layout with a `.json` in the shape the watcher writes (sidecar/watcher.py
`_save`), then copied to a real MinIO under the same keys."""

import gzip
import os
import secrets
import select
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from oomdump import __version__
from sidecar import heapprofile
from sidecar.spool import Spool
from testinfra.minio import MinioServer
from tests.sidecar.servers import read_port, stop

PREFIX = "oom/"
MiB = 1024 * 1024
LIMIT = 256 * MiB  # the memory limit the metadata reports (the demo here runs unlimited)


@dataclass
class Saved:
    key: str
    profile: Path
    metadata: dict[str, Any]


@dataclass
class Captures:
    spool: Path
    first: Saved  # shop/api-7d9f8, cycle 3
    first_gc: Saved  # the ?gc=1 fetch right after it
    later: Saved  # the same process, cycle 10, ?gc=1
    old: Saved  # shop/worker-1, three hours ago, with `top` in its metadata
    hostile: list[Saved] = field(default_factory=list)  # attic/evil-0

    def all(self) -> list[Saved]:
        return [self.first, self.first_gc, self.later, self.old, *self.hostile]


def fetch(port: int, gc: bool) -> bytes:
    url = f"http://127.0.0.1:{port}/debug/pprof/heap" + ("?gc=1" if gc else "")
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read()


def wait_for_cycle(process: subprocess.Popen[str], cycle: int, timeout: float = 30) -> None:
    """Read the demo's `cycle N: ...` lines until cycle `cycle` has run."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
        line = process.stdout.readline() if ready else ""
        if not line and process.poll() is not None:
            break
        if line.startswith(f"cycle {cycle}:"):
            return
    raise AssertionError(f"the demo did not reach cycle {cycle}")


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def metadata(pid: int, port: int, gc: bool, pod: str, namespace: str) -> dict[str, Any]:
    """The fields sidecar/watcher.py `_save` writes, with this process's real figures."""
    usage = rss(pid)
    return {
        "pid": pid,
        "comm": "go-memory-leak",
        "port": port,
        "endpoint": f"127.0.0.1:{port}",
        "path": "/debug/pprof/heap" + ("?gc=1" if gc else ""),
        "gc": gc,
        "usage": usage,
        "raw_usage": usage,
        "inactive_file": 0,
        "limit": LIMIT,
        "percent": round(100.0 * usage / LIMIT, 2),
        "threshold": 70,
        "threshold_bytes": LIMIT * 70 // 100,
        "metric": "working_set",
        "trigger": "poll",
        "detect_mode": "poll",
        "cgroup": "/kubepods/pod-test",
        "cgroup_version": 1,
        "pod": pod,
        "namespace": namespace,
        "node": "node-a",
        "timings": {"detected_to_fetch_start_ms": 0.1, "fetch_ms": 2.0},
        "oomdump_version": __version__,
    }


def capture(leak_binary: Path, spool_dir: Path) -> Captures:
    spool = Spool(spool_dir, max_files=100, max_bytes=100 * MiB)
    spool.prepare()

    def save(data: bytes, meta: dict[str, Any], moment: datetime) -> Saved:
        dump = spool.save(
            data,
            meta,
            prefix=PREFIX,
            namespace=meta["namespace"],
            pod=meta["pod"],
            moment=moment,
            comm=meta["comm"],
            pid=meta["pid"],
            port=meta["port"],
        )
        return Saved(dump.key, dump.profile_path, {**meta, "key": dump.key})

    process = subprocess.Popen(
        [
            str(leak_binary),
            "-port",
            "0",
            "-mode",
            "gradual",
            "-step",
            str(2 * MiB),
            "-interval",
            "50ms",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        port = read_port(process, "pprof listening on")
        pid = process.pid
        wait_for_cycle(process, 3)
        moment = datetime.now(UTC)
        first = save(fetch(port, False), metadata(pid, port, False, "api-7d9f8", "shop"), moment)
        first_gc = save(fetch(port, True), metadata(pid, port, True, "api-7d9f8", "shop"), moment)
        wait_for_cycle(process, 10)
        # With ?gc=1, as the watcher's second fetch: the profile shows the heap as of now, not as
        # of the last collection the runtime happened to run.
        later = save(
            fetch(port, True), metadata(pid, port, True, "api-7d9f8", "shop"), datetime.now(UTC)
        )
    finally:
        stop(process)
    # An older dump of another pod, in the shape a watcher that reads profiles writes: the
    # metadata carries the top functions (issue 19), so `list` needs no profile read for it.
    data = first.profile.read_bytes()
    old_meta = metadata(os.getpid(), 6060, False, "worker-1", "shop")
    old_meta["top"] = [
        {
            "name": r.name,
            "flat_bytes": r.flat_bytes,
            "flat_share": r.flat_share,
            "cum_bytes": r.cum_bytes,
            "cum_share": r.cum_share,
        }
        for r in heapprofile.top(heapprofile.read(data), n=3)
    ]
    old = save(data, old_meta, datetime.now(UTC) - timedelta(hours=3))
    captures = Captures(spool_dir, first, first_gc, later, old)
    # What a hostile app could have made the watcher save: random bytes and a gzip bomb.
    bomb = gzip.compress(b"\0" * (64 * MiB), compresslevel=9)
    for index, body in enumerate((secrets.token_bytes(4096), bomb)):
        meta = metadata(os.getpid(), 7000 + index, False, "evil-0", "attic")
        captures.hostile.append(save(body, meta, datetime.now(UTC) - timedelta(hours=1)))
    return captures


def upload(captures: Captures, minio: MinioServer, bucket: str) -> None:
    """The spool's files to the bucket, under the same keys (as the watcher's uploader does)."""
    minio.make_bucket(bucket)
    client = minio.client()
    for path in sorted(captures.spool.rglob("*")):
        if path.is_file():
            key = path.relative_to(captures.spool).as_posix()
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
