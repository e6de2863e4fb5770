"""The real watcher, `python -m sidecar`, as a child process: what users run.

`PodView` gives it a PROC_ROOT that shows only chosen processes, as a pod's shared PID
namespace shows only the pod's (`/proc/<pid>` symlinks). `WatcherProcess` starts it with an
environment, reads its log lines on a thread (searchable while it runs), and stops it with
SIGTERM, killing it only if it does not stop in time (and saying so).
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Lines:
    """A child's output lines, read on a thread, searchable while it runs."""

    def __init__(self, stream: Iterable[str]) -> None:
        self.lines: list[str] = []
        self._new = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Iterable[str]) -> None:
        for line in stream:
            with self._new:
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()

    def matching(self, *needles: str) -> list[str]:
        with self._new:
            return [line for line in self.lines if all(n in line for n in needles)]

    def wait_for(self, predicate: Callable[[str], bool], deadline: float) -> str | None:
        """The first line for which `predicate(line)` holds, waiting up to `deadline` s."""
        end = time.monotonic() + deadline
        seen = 0
        with self._new:
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._new.wait(left)

    def wait_for_all(self, *needles: str, deadline: float = 30.0) -> str:
        """The first line holding every needle; AssertionError (with the log) after
        `deadline` seconds."""
        line = self.wait_for(lambda text: all(n in text for n in needles), deadline)
        if line is None:
            tail = "\n".join(self.lines[-40:])
            raise AssertionError(f"no log line with {needles} within {deadline:g}s:\n{tail}")
        return line


class PodView:
    """A PROC_ROOT that shows only the processes added to it; None = the host's /proc."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    @property
    def proc_root(self) -> str:
        return str(self.folder) if self.folder else "/proc"

    def add(self, pid: int) -> None:
        if self.folder:
            (self.folder / str(pid)).symlink_to(f"/proc/{pid}")

    def remove(self, pid: int) -> None:
        if self.folder:
            (self.folder / str(pid)).unlink(missing_ok=True)


class WatcherProcess:
    """`python -m sidecar` with `env` over this environment, logging to `log`."""

    def __init__(self, env: dict[str, str], start_deadline: float = 30.0) -> None:
        full = {**os.environ, "PYTHONPATH": str(REPO), **env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sidecar"],
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.process.stderr is not None
        self.log = Lines(self.process.stderr)
        if self.log.wait_for(lambda line: "event=watch-start" in line, start_deadline) is None:
            self.stop()
            raise RuntimeError("the watcher did not start: " + "\n".join(self.log.lines[-20:]))

    def stop(self, deadline: float = 20.0) -> bool:
        """SIGTERM, then SIGKILL after `deadline` s; True when it stopped on SIGTERM."""
        if self.process.poll() is not None:
            return True
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(deadline)
            return True
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return False

    def __enter__(self) -> "WatcherProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
