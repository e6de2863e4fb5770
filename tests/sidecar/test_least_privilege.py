"""The watcher when the app's cgroupfs is read-only, as under the least-privilege profile
(no `privileged`: the runtime mounts /sys/fs/cgroup read-only in the container): no v1
threshold can be armed, so the watcher says so and why, falls back to the adaptive poll,
and still captures the real leak before the kernel's kill.

The app runs in a mount namespace of its own where the v1 memory hierarchy is remounted
read-only, so the watcher reaches its cgroup through a read-only mount exactly as it
would reach a container's. Needs root and the v1 memory controller.
"""

import shlex
import subprocess
import threading
from pathlib import Path

import pytest

from testinfra.cgroups import MiB, memory_cgroup
from testinfra.watcher_process import PodView, WatcherProcess
from tests.sidecar.harness import saved_metadata

pytestmark = [pytest.mark.cgroup, pytest.mark.usefixtures("cgroup_v1")]


@pytest.mark.parametrize("detect_mode", ["auto", "adaptive"])
def test_a_read_only_cgroupfs_falls_back_to_the_adaptive_poll_and_still_captures(
    leak_binary: Path, tmp_path: Path, detect_mode: str
) -> None:
    (tmp_path / "proc").mkdir()
    view = PodView(tmp_path / "proc")
    dumps = tmp_path / "dumps"
    leak = [str(leak_binary), "-port", "0", "-mode", "gradual", "-step", str(8 * MiB)]
    leak += ["-interval", "50ms"]
    in_container = "mount -o remount,bind,ro /sys/fs/cgroup/memory && exec " + shlex.join(leak)
    env = {
        "PROC_ROOT": view.proc_root,
        "DUMP_DIR": str(dumps),
        "CRITICAL": "70",
        "DETECT_MODE": detect_mode,
    }
    with memory_cgroup(256 * MiB) as group, WatcherProcess(env) as watcher:
        app = group.spawn(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", in_container],
            stdout=subprocess.PIPE,
            text=True,
        )
        # The pod's view shows the app once its "container" is set up: this launcher
        # remounts in place after it started, where a runtime sets the mounts up before
        # the exec (tests/node runs the real runtime).
        assert app.stdout is not None and "pprof listening" in app.stdout.readline()
        threading.Thread(target=app.stdout.read, daemon=True).start()
        view.add(app.pid)
        assert app.wait(timeout=60) == -9 and group.oom_kills() == 1
        watcher.log.wait_for_all("event=dump-saved", f"pid={app.pid} ")
        if detect_mode == "auto":
            line = watcher.log.wait_for_all("event=detector-fallback", "route=adaptive")
            assert "is not writable" in line and "Read-only file system" in line
        watcher.log.wait_for_all("event=detector-mode", "mode=adaptive")
    saved = saved_metadata(dumps)
    first = next(m for m in saved if m["pid"] == app.pid)
    assert first["percent"] >= 70 and first["detect_mode"] == "adaptive"
