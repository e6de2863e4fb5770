"""Start the test servers as processes that always stop (stdin closed, then killed)."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BAD_SERVER = HERE / "bad_pprof_server.py"


def read_port(process: subprocess.Popen[str], marker: str) -> int:
    """The port from the first stdout line containing `marker` ("listening 1234")."""
    assert process.stdout is not None
    for line in process.stdout:
        if marker in line:
            return int(line.rsplit(maxsplit=1)[1].rsplit(":", 1)[-1].strip("[]"))
    raise RuntimeError(f"process {process.args} ended before printing {marker!r}")


def stop(process: subprocess.Popen[Any]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with suppress(OSError):
                stream.close()


@contextmanager
def bad_server(mode: str, spawn: Any = None, ballast_mib: int = 0) -> Iterator[tuple[int, int]]:
    """(pid, port) of a misbehaving endpoint; `spawn` starts it (e.g. inside a cgroup)."""
    argv: Sequence[str] = [sys.executable, str(BAD_SERVER), mode, str(ballast_mib)]
    kwargs: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    if spawn is None:
        process = subprocess.Popen(argv, start_new_session=True, **kwargs)
    else:
        process = spawn(argv, **kwargs)
    try:
        yield process.pid, read_port(process, "listening")
    finally:
        stop(process)
