"""Start server processes that cannot outlive the tests that started them.

Each child runs in its own session (so a whole process group can be signalled) and asks the
kernel to SIGKILL it when the Python process that started it dies, so even a test run that
is itself killed leaves nothing behind.
"""

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path

_PR_SET_PDEATHSIG = 1
STOP_GRACE = 10.0


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def start_process(
    args: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `args` in a new session, stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(args),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def stop_process(process: subprocess.Popen[bytes] | None, grace: float = STOP_GRACE) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds; no-op when gone."""
    if process is None:
        return
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    # The leader may be gone while children of its group linger.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def log_tail(log_path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


class ProcessDied(RuntimeError):
    """A server exited or never became ready; the message carries the tail of its log."""


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll `ready()` until it is true; fail early when `process` dies, late at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            tail = log_tail(log_path) if log_path else ""
            raise ProcessDied(f"{what} exited with {process.returncode}:\n{tail}")
        if ready():
            return
        if time.monotonic() > deadline:
            tail = log_tail(log_path) if log_path else ""
            raise ProcessDied(f"{what} not ready after {timeout:.0f}s:\n{tail}")
        time.sleep(0.1)
