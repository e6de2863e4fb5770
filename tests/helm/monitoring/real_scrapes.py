"""What real watchers and a real webhook serve on /metrics after real events: the alert
rules are checked against these scrapes, not against a list of names.

Each "pod" is one real watcher (`python -m sidecar`, as in tests/sidecar) watching real
processes under a real cgroup v1 memory limit:
  api-0     a Go program leaking until captured, with a second listening port that never
            answers (an app port beside pprof: that fetch fails while the capture saves),
            uploading to a real MinIO;
  batch-0   the same leak, uploading to a bucket that does not exist;
  worker-0  a pprof port answering 404 over the threshold (failed captures), and a process
            OOM-killed before it listens (a miss);
  idle-0    nothing happens.
The webhook is `python -m webhook` with certificates from `python -m certs`.
"""

import os
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from testinfra.cgroups import MemoryCgroup, MiB, memory_cgroup
from testinfra.gobuild import build_local
from testinfra.minio import MinioServer
from testinfra.netutil import free_port
from testinfra.watcher_process import REPO, PodView, WatcherProcess
from testinfra.webhook_server import WebhookServer, generate_certs

NAMESPACE = "shop"
LIMIT = 256 * MiB
BUCKET = "oomdump-alerts"
BAD_PPROF_SERVER = REPO / "tests" / "sidecar" / "bad_pprof_server.py"
EVENT_DEADLINE = 60.0


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """One /metrics answer: the family names it declares (# TYPE) and its samples."""

    families: frozenset[str]
    samples: tuple[Sample, ...]


def parse(text: str) -> Scrape:
    families: set[str] = set()
    samples: list[Sample] = []
    for family in text_string_to_metric_families(text):
        # The parser names a counter family without `_total`; the samples keep it.
        families.add(family.name + ("_total" if family.type == "counter" else ""))
        samples += [Sample(s.name, dict(s.labels), s.value) for s in family.samples]
    return Scrape(frozenset(families), tuple(samples))


def go_leak_binary() -> Path:
    return build_local("go-memory-leak", REPO / "examples" / "go-memory-leak")


def leaker_binary() -> Path:
    return build_local("leaker", REPO / "bench" / "capture" / "leaker")


class Pod:
    """One watcher with an empty pod view and its metrics port."""

    def __init__(self, name: str, folder: Path, env: dict[str, str]) -> None:
        (folder / "proc").mkdir(parents=True)
        self.name = name
        self.view = PodView(folder / "proc")
        self.port = free_port()
        self.watcher = WatcherProcess(
            {
                "PROC_ROOT": self.view.proc_root,
                "DUMP_DIR": str(folder / "dumps"),
                "METRICS_PORT": str(self.port),
                "POD_NAME": name,
                "POD_NAMESPACE": NAMESPACE,
                "FETCH_TIMEOUT": "1s",
                **env,
            }
        )

    def start(self, group: MemoryCgroup, argv: list[str], **popen: object) -> subprocess.Popen:
        process = group.spawn(argv, **popen)
        self.view.add(process.pid)  # as the pod's /proc shows a new process at once
        return process

    def wait_for(self, *needles: str) -> str:
        return self.watcher.log.wait_for_all(*needles, deadline=EVENT_DEADLINE)

    def scrape(self) -> Scrape:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return parse(answer.read().decode())


@contextmanager
def pod(name: str, folder: Path, env: dict[str, str] | None = None) -> Iterator[Pod]:
    running = Pod(name, folder, env or {})
    try:
        yield running
    finally:
        running.watcher.stop()


def _s3_env(minio: MinioServer, bucket: str) -> dict[str, str]:
    return {
        "BUCKET": bucket,
        "S3_ENDPOINT_URL": minio.endpoint_url,
        "AWS_ACCESS_KEY_ID": minio.access_key,
        "AWS_SECRET_ACCESS_KEY": minio.secret_key,
        "AWS_REGION": "us-east-1",
        "UPLOAD_BACKOFF_MIN": "1s",
    }


def _capture_then_upload(running: Pod, upload_event: str) -> None:
    """The Go leak (20 MiB/s: 4 s from 70% to the limit) captured, first and ?gc=1, its
    silent second port failing meanwhile; killed, then the upload attempted."""
    silent = socket.create_server(("127.0.0.1", 0))  # listens, never accepts
    leak = [str(go_leak_binary()), "-port", "0", "-mode", "gradual", "-step", str(4 * MiB)]
    with memory_cgroup(LIMIT) as group:
        try:
            app = running.start(
                group,
                [*leak, "-interval", "200ms"],
                pass_fds=(silent.fileno(),),
                stdout=subprocess.DEVNULL,
            )
        finally:
            silent.close()  # the app holds its own copy
        running.wait_for("event=fetch-failed", f"pid={app.pid} ", "reason=timeout")
        # The ?gc=1 round follows the first, which waits for the silent port's timeout.
        running.wait_for("event=dump-saved", f"pid={app.pid} ", "gc=True")
        group.kill_all()
        app.wait(timeout=30)
    running.wait_for(upload_event)


def captured_and_uploaded(folder: Path, minio: MinioServer) -> Scrape:
    with pod("api-0", folder, _s3_env(minio, BUCKET)) as running:
        _capture_then_upload(running, "event=upload-done")
        return running.scrape()


def captured_upload_failing(folder: Path, minio: MinioServer) -> Scrape:
    with pod("batch-0", folder, _s3_env(minio, "no-such-bucket")) as running:
        _capture_then_upload(running, "event=upload-failed")
        return running.scrape()


def failed_and_missed(folder: Path) -> Scrape:
    with pod("worker-0", folder) as running:
        with memory_cgroup(LIMIT) as group:
            # 200 MiB touched under 256 MiB: over 70% at once, and its only port says 404.
            server = running.start(
                group,
                [sys.executable, str(BAD_PPROF_SERVER), "404", "200"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert server.stdin is not None
            running.wait_for("event=fetch-failed", f"pid={server.pid} ", "reason=http-404")
            server.stdin.close()  # it exits
            server.wait(timeout=30)
            running.wait_for("event=process-gone", f"pid={server.pid} ")
        with memory_cgroup(LIMIT) as group:
            app = running.start(group, [str(leaker_binary()), "-base", "400", "-now"])
            app.wait(timeout=60)
            running.wait_for("event=capture-missed", f"pid={app.pid} ", "reason=no-port-yet")
        return running.scrape()


def idle(folder: Path) -> Scrape:
    with pod("idle-0", folder) as running:
        return running.scrape()


def webhook(folder: Path) -> Scrape:
    certs = generate_certs(folder / "certs")
    server = WebhookServer(certs, "registry.example/oomdump:test", folder / "webhook.log")
    server.start()
    try:
        context = ssl.create_default_context(cafile=str(certs.ca))
        url = f"https://localhost:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10, context=context) as answer:
            return parse(answer.read().decode())
    finally:
        server.stop()


def all_pods(folder: Path, minio: MinioServer) -> dict[str, Scrape]:
    """{pod name: its watcher's scrape} for the four pods above."""
    minio.make_bucket(BUCKET)
    os.makedirs(folder, exist_ok=True)
    return {
        "api-0": captured_and_uploaded(folder / "api-0", minio),
        "batch-0": captured_upload_failing(folder / "batch-0", minio),
        "worker-0": failed_and_missed(folder / "worker-0"),
        "idle-0": idle(folder / "idle-0"),
    }
