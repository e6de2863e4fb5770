"""The watch loop's decisions on a prepared /proc tree, fetching from real servers.

The tree stands in for a pod (cgroup v2 memory files cannot be real here); the pprof
endpoints are real processes: the Go leak program serving net/http/pprof, or a misbehaving
one, reached through PPROF_PORTS.
"""

import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from sidecar import cgroup
from sidecar import table as table_module
from sidecar.procs import ProcessKey
from sidecar.table import Watched
from sidecar.watcher import Watcher
from testinfra.waiting import wait_for
from tests.sidecar.harness import make_watcher, saved_metadata
from tests.sidecar.proctree import (
    PF_KTHREAD,
    V2_NS_CGROUP_FILE,
    V2_NS_MOUNTINFO,
    FakeProcess,
    stat_line,
    v2_memory_files,
    write_process,
)
from tests.sidecar.servers import bad_server

MiB = 1024 * 1024
# The pods here are prepared trees (cgroup v2 memory files this kernel cannot produce).
pytestmark = pytest.mark.usefixtures("prepared_cgroup_trees")
APP = ProcessKey(7, 1000)


def pod_tree(
    root: Path, usage: int = 800 * MiB, limit: str = str(1024 * MiB), inactive_file: int = 0
) -> Path:
    proc = root / "proc"
    files = v2_memory_files("/sys/fs/cgroup", usage, limit, inactive_file)
    write_process(
        proc,
        FakeProcess(
            APP.pid,
            "app",
            starttime=APP.starttime,
            cgroup=V2_NS_CGROUP_FILE,
            mountinfo=V2_NS_MOUNTINFO,
            files=files,
        ),
    )
    return proc


def watcher_for(tmp_path: Path, proc: Path, port: int, **env: str) -> Watcher:
    base = {
        "PROC_ROOT": str(proc),
        "DUMP_DIR": str(tmp_path / "spool"),
        "CRITICAL": "70",
        "PPROF_PORTS": str(port),
        "FETCH_TIMEOUT": "2s",
        "POD_NAMESPACE": "shop",
        "POD_NAME": "web-0",
    }
    return make_watcher({**base, **env}, select=lambda process: True)


def capture_once(watcher: Watcher, watched: Watched) -> None:
    before = (watched.captures, watched.retry_after)
    watcher.check(watched, frozenset())
    wait_for(lambda: not watched.capturing, "the capture to finish")
    # A capture ran (it may finish before we look): it either saved or set a retry.
    assert (watched.captures, watched.retry_after) != before


def test_capture_saves_first_and_gc_profiles_then_cools_down(
    tmp_path: Path, go_pprof_port: int, logs
) -> None:
    proc = pod_tree(tmp_path)
    watcher = watcher_for(tmp_path, proc, go_pprof_port, COOLDOWN="1s")
    watcher.refresh()
    watched = watcher.watched[APP]
    capture_once(watcher, watched)
    saved = saved_metadata(tmp_path / "spool")
    assert [m["gc"] for m in saved] == [False, True]
    first = saved[0]
    assert first["key"].startswith("shop/web-0/") and first["key"].endswith(
        f"-app-7-{go_pprof_port}.pb.gz"
    )
    assert (first["usage"], first["limit"], first["percent"]) == (800 * MiB, 1024 * MiB, 78.12)
    assert (first["metric"], first["threshold"], first["cgroup_version"]) == ("working_set", 70, 2)
    assert first["timings"]["fetch_ms"] > 0
    assert watcher.metrics.captures.labels("first")._value.get() == 1

    watcher.check(watched, frozenset())  # still over, but cooling down
    assert not watched.capturing
    stamped = watched.last_capture
    assert stamped is not None
    wait_for(lambda: time.monotonic() - stamped >= 1.0, "the cooldown to pass")
    capture_once(watcher, watched)  # above the threshold again after the cooldown
    assert len(saved_metadata(tmp_path / "spool")) == 4


def test_below_threshold_is_not_captured(tmp_path: Path, go_pprof_port: int) -> None:
    watcher = watcher_for(tmp_path, pod_tree(tmp_path, usage=700 * MiB), go_pprof_port)
    watcher.refresh()
    watcher.check(watcher.watched[APP], frozenset())
    assert not watcher.watched[APP].capturing


def test_memory_stat_is_read_only_at_the_threshold_or_after_an_event(
    tmp_path: Path, go_pprof_port: int
) -> None:
    """Below the threshold raw usage decides alone (the working set cannot exceed it);
    at or over it, or when the process's event fired, the working set is read and decides."""
    proc = pod_tree(tmp_path, inactive_file=200 * MiB)
    watcher = watcher_for(tmp_path, proc, go_pprof_port)
    watcher.refresh()
    watched = watcher.watched[APP]
    current = Path(os.readlink(f"/proc/self/fd/{watched.cgroup.folder._fd}")) / "memory.current"
    watcher.check(watched, frozenset())  # raw 800 MiB over 716.8, working set 600 not
    assert not watched.capturing
    assert watched.sampler.stat_reads == 1
    current.write_text(f"{500 * MiB}\n")
    watcher.check(watched, frozenset())
    assert watched.sampler.stat_reads == 1
    watcher.check(watched, frozenset({APP}))  # an event: the detector gets the real metric
    assert watched.sampler.stat_reads == 2
    assert not watched.capturing
    current.write_text(f"{1000 * MiB}\n")  # working set 800 MiB: over
    capture_once(watcher, watched)
    first = saved_metadata(tmp_path / "spool")[0]
    assert (first["usage"], first["raw_usage"], first["inactive_file"]) == (
        800 * MiB,
        1000 * MiB,
        200 * MiB,
    )


def test_failed_capture_is_retried_without_cooldown(tmp_path: Path, logs) -> None:
    with bad_server("404") as (_, port):
        watcher = watcher_for(tmp_path, pod_tree(tmp_path), port, COOLDOWN="1h")
        watcher.refresh()
        watched = watcher.watched[APP]
        capture_once(watcher, watched)
        assert watched.last_capture is None  # nothing saved: no cooldown
        assert logs.matching("event=fetch-failed", "reason=http-404")
        assert logs.matching("event=capture-failed", "pid=7")
        watcher.check(watched, frozenset())
        assert not watched.capturing  # too soon after the failure
        retry_after = watched.retry_after
        wait_for(lambda: time.monotonic() >= retry_after, "the retry delay")
        capture_once(watcher, watched)
    assert len(logs.matching("event=fetch-failed", "reason=http-404")) == 2
    assert watcher.metrics.failures.labels("http-404")._value.get() == 2


def test_reasons_said_once_and_vanished_processes(
    tmp_path: Path, go_pprof_port: int, logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = pod_tree(tmp_path)
    write_process(proc, FakeProcess(1, "pause"))
    write_process(proc, FakeProcess(2, "kthreadd", flags=PF_KTHREAD))
    write_process(
        proc,
        FakeProcess(
            20,
            "sidecar-less",
            cgroup=V2_NS_CGROUP_FILE,
            mountinfo=V2_NS_MOUNTINFO,
            files=v2_memory_files("/sys/fs/cgroup", MiB, "max"),
        ),
    )
    write_process(proc, FakeProcess(30, "odd", cgroup=V2_NS_CGROUP_FILE, mountinfo=""))
    watcher = watcher_for(tmp_path, proc, go_pprof_port)
    resolved: list[int] = []
    real_resolve = cgroup.resolve

    def counting_resolve(proc_root: Path, pid: int) -> cgroup.MemoryCgroup:
        resolved.append(pid)
        return real_resolve(proc_root, pid)

    monkeypatch.setattr(cgroup, "resolve", counting_resolve)
    for _ in range(3):
        watcher.refresh()
    assert sorted(resolved) == [7, 20, 30]  # a "not watched" decision is kept, not redone
    (proc / "30" / "cgroup").write_text(V2_NS_CGROUP_FILE + "\n")  # moved to another cgroup
    watcher.refresh()
    assert sorted(resolved) == [7, 20, 30, 30]  # looked at again (and not usable still)
    monkeypatch.setattr(table_module, "NOT_WATCHED_RECHECK", 0.0)
    watcher.refresh()  # after the recheck delay they are looked at again, and not re-said
    assert sorted(resolved) == [7, 20, 20, 30, 30, 30]
    expected = {
        1: "pod sandbox pause process",
        2: "kernel thread",
        20: "no memory limit",
        30: "cgroup not usable: no cgroup2 mount",
    }
    for pid, reason in expected.items():
        lines = logs.matching("event=not-watched", f"pid={pid} ")
        assert len(lines) == 1 and reason in lines[0], (pid, lines)
    assert list(watcher.watched) == [APP]
    assert watcher.metrics.unwatched.labels("no memory limit")._value.get() == 1

    shutil.rmtree(proc / "7")  # the app exits
    watcher.check(next(iter(watcher.watched.values())), frozenset())  # its cgroup is gone
    watcher.refresh()
    assert not watcher.watched
    assert logs.matching("event=process-gone", "pid=7 ")
    assert watcher.metrics.watched._value.get() == 0


def test_spool_full_refuses_and_says_so(tmp_path: Path, go_pprof_port: int, logs) -> None:
    watcher = watcher_for(tmp_path, pod_tree(tmp_path), go_pprof_port, SPOOL_MAX_FILES="1")
    watcher.refresh()
    capture_once(watcher, watcher.watched[APP])
    assert len(saved_metadata(tmp_path / "spool")) == 1  # the gc=1 profile was refused
    assert logs.matching("event=dump-refused", "reason=spool-full", "SPOOL_MAX_FILES=1")
    assert watcher.metrics.failures.labels("spool-full")._value.get() == 1


def test_no_ports_is_a_clear_failure(tmp_path: Path, logs) -> None:
    proc = pod_tree(tmp_path)
    (proc / "7" / "net").mkdir()
    watcher = make_watcher(
        {"PROC_ROOT": str(proc), "DUMP_DIR": str(tmp_path / "spool")}, select=lambda process: True
    )
    watcher.refresh()
    capture_once(watcher, watcher.watched[APP])
    assert logs.matching("event=capture-skipped", 'reason="no-ports')


def test_metrics_endpoint(tmp_path: Path, go_pprof_port: int) -> None:
    watcher = watcher_for(tmp_path, pod_tree(tmp_path), go_pprof_port)
    watcher.refresh()
    capture_once(watcher, watcher.watched[APP])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop_serving = watcher.metrics.serve(port, addr="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        stop_serving()
    assert "oomdump_watched_processes 1.0" in text
    assert 'oomdump_captures_total{kind="first"} 1.0' in text
    assert "oomdump_crossing_to_dump_seconds_count 2.0" in text


def test_exec_renames_a_watched_process(tmp_path: Path, go_pprof_port: int) -> None:
    proc = pod_tree(tmp_path)
    (proc / "7" / "stat").write_text(stat_line(7, "sh", APP.starttime))  # before its exec
    watcher = watcher_for(tmp_path, proc, go_pprof_port)
    watcher.refresh()
    assert watcher.watched[APP].process.comm == "sh"
    (proc / "7" / "stat").write_text(stat_line(7, "app", APP.starttime))  # same pid + start
    watcher.refresh()
    assert watcher.watched[APP].process.comm == "app"
    capture_once(watcher, watcher.watched[APP])
    assert {m["comm"] for m in saved_metadata(tmp_path / "spool")} == {"app"}
