"""Real Go leaks in real cgroup v1 limits, killed by the real kernel: captured first, every run.

Needs root and the v1 memory controller (skipped with the reason otherwise).
"""

import os
import signal
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from testinfra.cgroups import MiB, memory_cgroup
from testinfra.waiting import wait_for
from tests.sidecar.harness import make_watcher, pprof_top, running, saved_metadata
from tests.sidecar.servers import bad_server

pytestmark = [pytest.mark.cgroup, pytest.mark.usefixtures("cgroup_v1")]
RUNS = 5

# (leak flags, cgroup limit, CRITICAL). Doubling: 64 -> 128 MiB lands at ~66% of 200 MiB
# (between the 50% threshold and the limit); the next step to 256 MiB is killed.
SHAPES = {
    "gradual": (["-mode", "gradual", "-step", str(8 * MiB), "-interval", "50ms"], 256 * MiB, 70),
    "doubling": (
        ["-mode", "doubling", "-start", str(4 * MiB), "-interval", "500ms"],
        200 * MiB,
        50,
    ),
}


@pytest.mark.parametrize("run", range(RUNS))
@pytest.mark.parametrize("shape", SHAPES)
def test_leak_is_captured_before_the_oom_kill(
    shape: str, run: int, leak_binary: Path, tmp_path: Path, logs
) -> None:
    """What users run: the watcher's defaults (DETECT_MODE=auto, events on these groups)."""
    captured_before_kill(shape, f"{shape}-{run}", {}, leak_binary, tmp_path, logs)
    assert logs.matching("event=detector-mode", "mode=events")


@pytest.mark.parametrize("mode", ["poll", "adaptive"])
def test_gradual_leak_is_captured_in_the_other_detect_modes(
    mode: str, leak_binary: Path, tmp_path: Path, logs
) -> None:
    captured_before_kill(
        "gradual", f"gradual-{mode}", {"DETECT_MODE": mode}, leak_binary, tmp_path, logs
    )
    assert logs.matching("event=watch-start", f"detect_mode={mode}")


def captured_before_kill(
    shape: str, pod: str, extra_env: dict[str, str], leak_binary: Path, tmp_path: Path, logs
) -> None:
    flags, limit, critical = SHAPES[shape]
    with memory_cgroup(limit) as group:
        app = group.spawn([str(leak_binary), "-port", "0", *flags], stdout=subprocess.DEVNULL)
        env = {
            "CRITICAL": str(critical),
            "WATCH_TIME": "100ms",
            "DUMP_DIR": str(tmp_path),
            "POD_NAMESPACE": "test",
            "POD_NAME": pod,
            **extra_env,
        }
        watcher = make_watcher(env, select=lambda process: process.pid == app.pid)
        with running(watcher):
            returncode = app.wait(timeout=60)
        oom_kills = group.oom_kills()
    assert returncode == -9 and oom_kills == 1, "the kernel did not OOM-kill the leak"
    saved = saved_metadata(tmp_path)
    assert saved, "no dump before the kill; log:\n" + "\n".join(logs.lines)
    first = saved[0]
    assert first["pid"] == app.pid and first["comm"] == "go-memory-leak"
    assert critical <= first["percent"] < 100
    assert first["limit"] == limit and first["threshold"] == critical
    assert first["key"].startswith(f"test/{pod}/")
    profile = tmp_path / first["key"]
    top = pprof_top(leak_binary, profile)
    assert "main.leakDocuments" in top, top


def test_misbehaving_endpoints_never_stall_other_processes(
    leak_binary: Path, tmp_path: Path, logs
) -> None:
    modes = ["hang", "404", "html", "not-http"]
    with ExitStack() as stack:
        bad_group = stack.enter_context(memory_cgroup(1024 * MiB))
        leak_group = stack.enter_context(memory_cgroup(256 * MiB))
        pids = {
            mode: stack.enter_context(bad_server(mode, spawn=bad_group.spawn))[0] for mode in modes
        }
        # Put the bad servers over the threshold: limit at 1.6x their usage (62% > 50%).
        bad_group.set_limit(int(bad_group.usage_bytes() * 1.6))
        app = leak_group.spawn(
            [str(leak_binary), "-port", "0", *SHAPES["gradual"][0]], stdout=subprocess.DEVNULL
        )
        watched = {*pids.values(), app.pid}
        env = {
            "CRITICAL": "50",
            "WATCH_TIME": "100ms",
            # Far longer than the leak can live, even on a loaded machine: the hanging fetch
            # must still be in flight at the kill. The test ends it by killing that server.
            "FETCH_TIMEOUT": "120s",
            "DUMP_DIR": str(tmp_path),
        }
        watcher = make_watcher(env, select=lambda process: process.pid in watched)
        with running(watcher):
            assert app.wait(timeout=60) == -9
            assert leak_group.oom_kills() == 1
            hang_failures_at_kill = logs.matching("event=fetch-failed", f"pid={pids['hang']} ")
            os.kill(pids["hang"], signal.SIGKILL)
            wait_for(
                lambda: logs.matching("event=fetch-failed", f"pid={pids['hang']} "),
                "the hanging fetch to fail once its server is gone",
            )
    saved = saved_metadata(tmp_path)
    assert [m for m in saved if m["pid"] == app.pid], "\n".join(logs.lines)
    assert not [m for m in saved if m["pid"] in pids.values()]
    for mode, reason in [("404", "http-404"), ("html", "html"), ("not-http", "not-http")]:
        assert logs.matching("event=fetch-failed", f"pid={pids[mode]} ", f"reason={reason}"), mode
    # The hanging fetch was still in flight while the leak was captured and then killed.
    assert not hang_failures_at_kill
