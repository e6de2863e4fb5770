"""The watch loop as `python -m sidecar` builds it, on a prepared cgroup v2 pod whose limit
is far off (1 TiB, so the adaptive plan samples it only every WATCH_TIME, 10 s): a change of
memory.events wakes the loop at once, the sample it takes sees the new usage, and the wake
is counted (oomdump_detector_wakeups_total) and logged with how far off the next scheduled
sample was. The pod is a prepared tree (this kernel has no v2 memory controller, so
memory.events is a regular file the test rewrites); the inotify is the real one. tests/v2
does the same against a real kernel's memory.events."""

import os
import time
from pathlib import Path

import pytest

from sidecar.metrics import Metrics
from sidecar.procs import ProcessKey
from testinfra.waiting import wait_for
from tests.sidecar.conftest import LogLines
from tests.sidecar.harness import make_watcher, running
from tests.sidecar.proctree import (
    V2_NS_CGROUP_FILE,
    V2_NS_MOUNTINFO,
    FakeProcess,
    v2_memory_files,
    write_process,
)
from tests.sidecar.upload_harness import fields

pytestmark = pytest.mark.usefixtures("prepared_cgroup_trees")
MiB = 1024 * 1024
TiB = 1024**4
APP = ProcessKey(7, 1000)
WATCH_TIME = 10.0  # its maximum: a sample of a group far from its threshold every 10 s


def wakeups(metrics: Metrics, source: str) -> float | None:
    return metrics.registry.get_sample_value("oomdump_detector_wakeups_total", {"source": source})


def change_in_place(path: Path, text: str) -> None:
    """One write over the file's bytes, no truncation: one modification, as the kernel's
    change of memory.events is (write_text's truncate and write could wake the loop twice)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        assert os.write(fd, text.encode()) == path.stat().st_size
    finally:
        os.close(fd)


def test_a_memory_events_change_wakes_the_loop_long_before_its_next_sample(
    tmp_path: Path, logs: LogLines
) -> None:
    proc = tmp_path / "proc"
    app = FakeProcess(
        APP.pid,
        "app",
        APP.starttime,
        cgroup=V2_NS_CGROUP_FILE,
        mountinfo=V2_NS_MOUNTINFO,
        files=v2_memory_files("/sys/fs/cgroup", 10 * MiB, str(TiB)),
    )
    group = write_process(proc, app) / "root" / "sys" / "fs" / "cgroup"
    env = {"PROC_ROOT": str(proc), "DUMP_DIR": str(tmp_path / "spool"), "WATCH_TIME": "10s"}
    watcher = make_watcher(env, select=lambda process: True)
    metrics = watcher.metrics
    assert wakeups(metrics, "memory.events") == 0  # every source there from the start
    with running(watcher):
        wait_for(lambda: APP in watcher.watched, "the app to be watched", 10)
        watched = watcher.watched[APP]
        wait_for(lambda: watched.last_usage == 10 * MiB, "the first sample", 10)
        (group / "memory.current").write_text(f"{20 * MiB}\n")
        written = time.monotonic()
        change_in_place(group / "memory.events", "low 0\nhigh 1\nmax 0\noom 0\noom_kill 0\n")
        wait_for(lambda: watched.last_usage == 20 * MiB, "the sample the event called", 5)
        reacted = time.monotonic() - written
        wait_for(lambda: logs.matching("event=detector-wake"), "the wake's line", 5)
    assert reacted < WATCH_TIME / 2  # no poll was due: the plan's next sample was 10 s off
    [watching] = [fields(line) for line in logs.matching("event=watching")]
    [line] = [fields(line) for line in logs.matching("event=detector-wake")]
    assert (line["source"], line["cgroup"], line["wakes"]) == (
        "memory.events",
        watching["cgroup"],
        "1",
    )
    assert written <= float(line["monotonic"]) <= written + reacted
    assert float(line["next_sample_in"].removesuffix("s")) > WATCH_TIME / 2
    assert wakeups(metrics, "memory.events") == 1
    assert wakeups(metrics, "timeout") == 0  # not one wait ran its course
    assert (wakeups(metrics, "wake") or 0) >= 1  # the new process, and the stop
