"""Run the watcher in-process against real processes, and read what it saved."""

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sidecar.assemble import build
from sidecar.config import load_config
from sidecar.procs import Process
from sidecar.watcher import Watcher


def make_watcher(env: dict[str, str], select: Callable[[Process], bool]) -> Watcher:
    """The watcher `python -m sidecar` builds for `env` (its defaults: DETECT_MODE=auto,
    events on these v1 groups), narrowed to the processes `select` takes."""
    return build(load_config(env), select=select).watcher


@contextmanager
def running(watcher: Watcher) -> Iterator[Watcher]:
    """The watch loop on a thread, always stopped (and its captures joined) on exit."""
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), name="watch-loop", daemon=True)
    thread.start()
    try:
        yield watcher
    finally:
        stop.set()
        watcher.detector.wake()
        thread.join(30)
        watcher.fetcher.close()
        assert not thread.is_alive(), "the watch loop did not stop within 30s"


def saved_metadata(dump_dir: Path) -> list[dict[str, Any]]:
    """Every dump's metadata; not the hidden temporary a rewrite (the reader's annotation,
    which may run while a test looks) renames into place."""
    paths = sorted(path for path in dump_dir.rglob("*.json") if not path.name.startswith("."))
    return [json.loads(path.read_text()) for path in paths]


def pprof_top(binary: Path, profile: Path) -> str:
    result = subprocess.run(
        ["go", "tool", "pprof", "-top", "-sample_index=inuse_space", str(binary), str(profile)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
