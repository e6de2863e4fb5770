"""The real watcher (`python -m sidecar`) as a subprocess, shown a pod's processes, uploading
to a real MinIO: its log lines as they arrive, its /metrics scraped, real leaks to capture."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from testinfra.cgroups import MiB, memory_cgroup
from testinfra.minio import MinioServer
from testinfra.netutil import free_port

REPO = Path(__file__).resolve().parents[2]
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')
# The leak of tests/sidecar/test_capture_oom.py: captured before the kill at 256 MiB, every run.
LEAK_FLAGS = ["-mode", "gradual", "-step", str(8 * MiB), "-interval", "50ms"]
LEAK_LIMIT = 256 * MiB


def fields(line: str) -> dict[str, str]:
    """The key=value pairs of one log line (sidecar.log's quoting undone)."""
    parsed: dict[str, str] = {}
    for key, raw in _FIELD.findall(line):
        if raw.startswith('"'):
            raw = raw[1:-1].replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        parsed[key] = raw
    return parsed


@dataclass(frozen=True)
class Line:
    at: float  # time.monotonic() when the test read it
    text: str

    @property
    def fields(self) -> dict[str, str]:
        return fields(self.text)

    def is_event(self, event: str, **expected: str) -> bool:
        found = self.fields
        return found.get("event") == event and all(found.get(k) == v for k, v in expected.items())


class PodView:
    """A PROC_ROOT that shows only chosen processes, as a pod's shared PID namespace shows
    only the pod's (`/proc/<pid>` symlinks)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, pid: int) -> None:
        (self.folder / str(pid)).symlink_to(f"/proc/{pid}")

    def remove(self, pid: int) -> None:
        (self.folder / str(pid)).unlink(missing_ok=True)


def watcher_env(
    minio: MinioServer, bucket: str, dump_dir: Path, view: PodView, **extra: str
) -> dict[str, str]:
    """The env contract (DESIGN.md) for one watcher: nothing inherited, so no stray AWS_*."""
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO),
        "PROC_ROOT": str(view.folder),
        "DUMP_DIR": str(dump_dir),
        "BUCKET": bucket,
        "S3_ENDPOINT_URL": minio.endpoint_url,
        "AWS_ACCESS_KEY_ID": minio.access_key,
        "AWS_SECRET_ACCESS_KEY": minio.secret_key,
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "POD_NAMESPACE": "shop",
        "POD_NAME": "api-7d9f8",
        "S3_PREFIX": "oom/",
        "CRITICAL": "70",
        "WATCH_TIME": "100ms",
        "REFRESH_INTERVAL": "200ms",
        "SHUTDOWN_GRACE": "2s",
        "UPLOAD_BACKOFF_MIN": "200ms",
        "UPLOAD_BACKOFF_MAX": "1s",
        **extra,
    }


class WatcherProcess:
    """One `python -m sidecar`; its stderr read line by line on a thread, with arrival times."""

    def __init__(self, env: dict[str, str], python_flags: tuple[str, ...] = ()) -> None:
        self.metrics_port = free_port()
        self.env = {**env, "METRICS_PORT": str(self.metrics_port)}
        self.lines: list[Line] = []
        self._new = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, *python_flags, "-m", "sidecar"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for text in self.process.stderr:
            with self._new:
                self.lines.append(Line(time.monotonic(), text.rstrip("\n")))
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_for(
        self, predicate: Callable[[Line], bool], what: str, timeout: float = 30.0, start: int = 0
    ) -> Line:
        """The first line from index `start` on that satisfies `predicate` (bounded wait)."""
        deadline = time.monotonic() + timeout
        seen = start
        with self._new:
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no log line for {what} within {timeout:g}s\n{self}")
                self._new.wait(min(left, 0.5))

    def wait_count(
        self, predicate: Callable[[Line], bool], count: int, what: str, timeout: float = 30.0
    ) -> list[Line]:
        """Once `count` lines satisfy `predicate`, all of them (bounded wait)."""
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                found = [line for line in self.lines if predicate(line)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"{len(found)} of {count} lines for {what}\n{self}")
                self._new.wait(min(left, 0.5))

    @property
    def index(self) -> int:
        with self._new:
            return len(self.lines)

    def matching(self, predicate: Callable[[Line], bool]) -> list[Line]:
        with self._new:
            return [line for line in self.lines if predicate(line)]

    def events(self, event: str, **expected: str) -> list[Line]:
        return self.matching(lambda line: line.is_event(event, **expected))

    def started(self) -> "WatcherProcess":
        self.wait_for(lambda line: line.is_event("watch-start"), "event=watch-start")
        return self

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample on /metrics: (name, sorted labels) -> value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        return self.scrape().get((name, tuple(sorted(labels.items()))), 0.0)

    def kill(self) -> None:
        """SIGKILL: nothing runs after it (no grace, no flush)."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._reader.join(10)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, as the kubelet sends it; the exit code (bounded, SIGKILL after)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                message = f"the watcher ignored SIGTERM for {timeout:g}s\n{self}"
                raise AssertionError(message) from None
        self._reader.join(10)
        return self.process.returncode

    def __str__(self) -> str:
        with self._new:
            return "watcher log tail:\n" + "\n".join(line.text for line in self.lines[-40:])


@contextmanager
def running_watcher(
    env: dict[str, str], python_flags: tuple[str, ...] = ()
) -> Iterator[WatcherProcess]:
    watcher = WatcherProcess(env, python_flags)
    try:
        yield watcher.started()
    finally:
        if watcher.process.poll() is None:
            watcher.kill()


def leak_until_killed(binary: Path, view: PodView, watcher: WatcherProcess) -> int:
    """A real Go leak in a real v1 memory group, shown to the watcher until the kernel kills
    it; returns its pid once the watcher dropped it (so every capture of it has ended)."""
    with memory_cgroup(LEAK_LIMIT) as group:
        app = group.spawn([str(binary), "-port", "0", *LEAK_FLAGS], stdout=subprocess.DEVNULL)
        try:
            view.add(app.pid)
            assert app.wait(timeout=60) == -9, "the leak was not killed"
            assert group.oom_kills() == 1, "the kernel did not OOM-kill the leak"
        finally:
            with suppress(ProcessLookupError):
                app.kill()
            app.wait()
            view.remove(app.pid)
    watcher.wait_for(lambda line: line.is_event("process-gone", pid=str(app.pid)), "process-gone")
    return app.pid


def saved_keys(watcher: WatcherProcess, dump_dir: Path, pid: int) -> list[str]:
    """Keys of the dumps the watcher logged as saved for `pid`."""
    lines = watcher.events("dump-saved", pid=str(pid))
    return [Path(line.fields["path"]).relative_to(dump_dir).as_posix() for line in lines]


def spooled(dump_dir: Path) -> list[str]:
    """Every file left in the spool (temporaries included), relative to it."""
    return sorted(p.relative_to(dump_dir).as_posix() for p in dump_dir.rglob("*") if p.is_file())
