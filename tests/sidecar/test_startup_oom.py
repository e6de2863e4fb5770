"""OOMs at start-up, against the real watcher (`python -m sidecar`, its defaults) already
running, as in a pod whose app container starts or restarts: a Go process that serves pprof
at once and bursts soon after, a container restarted in the same cgroup, and one killed
before it could serve a profile (reported, with why).

Needs root and the v1 memory controller (skipped with the reason otherwise).
"""

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from testinfra.cgroups import MemoryCgroup, MiB, memory_cgroup
from testinfra.gobuild import build_local
from testinfra.netutil import free_port
from testinfra.watcher_process import PodView, WatcherProcess
from tests.sidecar.harness import saved_metadata

pytestmark = [pytest.mark.cgroup, pytest.mark.usefixtures("cgroup_v1")]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def leaker() -> Path:
    return build_local("leaker", REPO / "bench" / "capture" / "leaker")


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[tuple[WatcherProcess, PodView, Path]]:
    """The watcher with an empty pod view: the app's processes appear in it as they start."""
    (tmp_path / "proc").mkdir()
    view = PodView(tmp_path / "proc")
    dumps = tmp_path / "dumps"
    port = free_port()
    env = {"PROC_ROOT": view.proc_root, "DUMP_DIR": str(dumps), "METRICS_PORT": str(port)}
    with WatcherProcess(env) as watcher:
        watcher.metrics_port = port  # type: ignore[attr-defined]
        yield watcher, view, dumps


def start(group: MemoryCgroup, view: PodView, leaker: Path, *flags: str) -> subprocess.Popen:
    process = group.spawn([str(leaker), *flags], stdout=subprocess.DEVNULL)
    view.add(process.pid)  # as the pod's /proc shows a new process at once
    return process


def dumps_of(dumps: Path, pid: int) -> list[dict]:
    return [metadata for metadata in saved_metadata(dumps) if metadata["pid"] == pid]


def test_a_burst_300ms_after_start_is_captured(leaker: Path, pod) -> None:
    watcher, view, dumps = pod
    with memory_cgroup(256 * MiB) as group:
        app = start(group, view, leaker, "-shape", "burst", "-after", "300ms")
        assert app.wait(timeout=60) == -9 and group.oom_kills() == 1
    saved = dumps_of(dumps, app.pid)
    assert saved, "\n".join(watcher.log.lines[-30:])
    assert saved[0]["percent"] >= 70


def test_a_process_moved_into_its_container_group_after_it_started_is_watched_there(
    leaker: Path, pod
) -> None:
    """As runc starts a container's process in the runtime's group (on a kubelet node the
    pod's, whose limit is the sum of its containers') and then moves it into the
    container's group: the watcher re-resolves the young process and measures it against
    the container's limit, not the pod's (the real node found a capture made against the
    pod's 384 MiB)."""
    watcher, view, dumps = pod
    with memory_cgroup(384 * MiB) as pod_group, memory_cgroup(256 * MiB) as container:
        app = start(pod_group, view, leaker, "-shape", "burst", "-after", "3s")
        watcher.log.wait_for_all("event=watching", f"pid={app.pid} ", f"limit_bytes={384 * MiB}")
        container.add(app.pid)
        watcher.log.wait_for_all("event=placement-changed", f"pid={app.pid} ")
        watcher.log.wait_for_all("event=watching", f"pid={app.pid} ", f"limit_bytes={256 * MiB}")
        assert app.wait(timeout=60) == -9 and container.oom_kills() == 1
    saved = dumps_of(dumps, app.pid)
    assert saved, "\n".join(watcher.log.lines[-30:])
    assert {metadata["limit"] for metadata in saved} == {256 * MiB}


def test_every_life_of_a_restarting_container_is_captured(leaker: Path, pod) -> None:
    """The same cgroup, the process killed and started again: each life is a new process
    (a new PID), captured once it serves a profile."""
    watcher, view, dumps = pod
    lives = []
    with memory_cgroup(256 * MiB) as group:
        for _ in range(3):
            app = start(group, view, leaker, "-shape", "burst", "-after", "1s")
            assert app.wait(timeout=60) == -9
            view.remove(app.pid)
            lives.append(app.pid)
        assert group.oom_kills() == len(lives)
    missing = [pid for pid in lives if not dumps_of(dumps, pid)]
    assert not missing, "\n".join(watcher.log.lines[-40:])


def test_killed_before_it_could_serve_a_profile_is_reported(leaker: Path, pod) -> None:
    """It loads more than its limit before it listens: nothing can be fetched, and the
    watcher says that it saw the OOM and why nothing was saved."""
    watcher, view, dumps = pod
    with memory_cgroup(256 * MiB) as group:
        app = start(group, view, leaker, "-base", "400", "-now")
        assert app.wait(timeout=60) == -9 and group.oom_kills() == 1
        line = watcher.log.wait_for_all("event=capture-missed", f"pid={app.pid} ")
    assert "reason=no-port-yet" in line and "oom_killed=yes" in line
    assert not dumps_of(dumps, app.pid)
    with urllib.request.urlopen(f"http://127.0.0.1:{watcher.metrics_port}/metrics") as answer:
        metrics = answer.read().decode()
    assert 'oomdump_missed_total{reason="no-port-yet"} 1.0' in metrics


LATE_LISTENER = """
import socket, sys
sys.stdin.readline()  # until told to listen
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
print(listener.getsockname()[1], flush=True)
sys.stdin.read()
"""


def test_a_port_opened_later_is_known_at_the_next_look(tmp_path: Path) -> None:
    """A watched process that starts listening later: its port is found by the cheap look
    of every WATCH_TIME, long before the full refresh (REFRESH_INTERVAL=1m here) would."""
    (tmp_path / "proc").mkdir()
    view = PodView(tmp_path / "proc")
    env = {
        "PROC_ROOT": view.proc_root,
        "DUMP_DIR": str(tmp_path / "dumps"),
        "REFRESH_INTERVAL": "1m",
    }
    with memory_cgroup(256 * MiB) as group, WatcherProcess(env) as watcher:
        app = group.spawn(
            [sys.executable, "-c", LATE_LISTENER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            view.add(app.pid)
            watcher.log.wait_for_all("event=watching", f"pid={app.pid} ", "ports=none-yet")
            assert app.stdin is not None and app.stdout is not None
            app.stdin.write("listen\n")
            app.stdin.flush()
            port = int(app.stdout.readline())
            started = time.monotonic()
            watcher.log.wait_for_all("event=ports", f"pid={app.pid} ", f":{port}", deadline=30)
            # Generous for a loaded machine; the full refresh would take a minute.
            assert time.monotonic() - started < 20
        finally:
            app.kill()
            app.wait()


def test_a_process_watched_before_its_exec_is_named_as_it_runs(
    leak_binary: Path, tmp_path: Path
) -> None:
    """Found within WATCH_TIME of its start, a process may still be its launcher
    (`sh -c '... exec app'`); exec keeps pid and start time, so the capture names what runs
    then, not the launcher (REFRESH_INTERVAL=1m: not the full refresh's doing)."""
    (tmp_path / "proc").mkdir()
    view = PodView(tmp_path / "proc")
    dumps = tmp_path / "dumps"
    env = {"PROC_ROOT": view.proc_root, "DUMP_DIR": str(dumps), "REFRESH_INTERVAL": "1m"}
    leak = f"{leak_binary} -port 0 -mode gradual -step {8 * MiB} -interval 50ms"
    with memory_cgroup(256 * MiB) as group, WatcherProcess(env) as watcher:
        app = group.spawn(["sh", "-c", f"read go && exec {leak}"], stdin=subprocess.PIPE, text=True)
        view.add(app.pid)
        watcher.log.wait_for_all("event=watching", f"pid={app.pid} ", "comm=sh")
        assert app.stdin is not None
        app.stdin.write("go\n")
        app.stdin.flush()
        assert app.wait(timeout=60) == -9
        watcher.log.wait_for_all("event=dump-saved", f"pid={app.pid} ")
    saved = dumps_of(dumps, app.pid)
    assert saved and {m["comm"] for m in saved} == {"go-memory-leak"}
