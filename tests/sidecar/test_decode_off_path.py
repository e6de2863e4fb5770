"""Reading a dump for its culprit does not hold up another capture: two processes, each a real
pprof server in a real cgroup v1 memory group, watched by the real watcher
(`python -m sidecar`). The first serves a profile whose reading runs into the reader's
0.5 s deadline; the moment its complete (?gc=1) dump is saved, which is when its reading
starts, the second crosses its threshold. From the timestamps the watcher records
(CLOCK_MONOTONIC, system-wide): the second was detected while the first was being read,
and its fetch started before that read ended, within less than half of the read's time.
(What sharing the CPU with a read still costs a capture, in milliseconds, is measured by
bench/decode_beside_capture.py.)

Needs root and the v1 memory controller.
"""

import json
from pathlib import Path
from typing import Any

import pytest

from sidecar.verdicts import threshold_bytes
from testinfra.cgroups import MiB, memory_cgroup
from testinfra.costly_profiles import deadline_profile, small_profile
from testinfra.profile_server import ProfileApp
from testinfra.watcher_process import PodView, WatcherProcess

pytestmark = [pytest.mark.cgroup, pytest.mark.usefixtures("cgroup_v1")]
LIMIT = 128 * MiB


def metadata_of(line: str) -> dict[str, Any]:
    """The .json of the dump a dump-saved or dump-top line names."""
    profile = line.split(" path=", 1)[1].split(" ", 1)[0]
    return json.loads(Path(profile.removesuffix(".pb.gz") + ".json").read_text())


def test_a_costly_read_does_not_delay_the_next_capture(tmp_path: Path) -> None:
    (tmp_path / "slow.pb.gz").write_bytes(deadline_profile())
    (tmp_path / "fast.pb.gz").write_bytes(small_profile(b"main.fast"))
    (tmp_path / "proc").mkdir()
    view = PodView(tmp_path / "proc")
    env = {
        "PROC_ROOT": view.proc_root,
        "DUMP_DIR": str(tmp_path / "dumps"),
        "CRITICAL": "70",
        "COOLDOWN": "10m",  # one capture each
    }
    threshold = threshold_bytes(LIMIT, 70)
    with (
        memory_cgroup(LIMIT) as slow_group,
        memory_cgroup(LIMIT) as fast_group,
        WatcherProcess(env) as watcher,
    ):
        slow = ProfileApp(slow_group, tmp_path / "slow.pb.gz")
        fast = ProfileApp(fast_group, tmp_path / "fast.pb.gz")
        try:
            for app in (slow, fast):
                view.add(app.pid)
                watcher.log.wait_for_all("event=ports", f"pid={app.pid} ", f":{app.port}")
            slow.cross(threshold)
            watcher.log.wait_for_all("event=dump-saved", f"pid={slow.pid} ", "gc=True")
            fast.cross(threshold)
            fetched = watcher.log.wait_for_all("event=dump-saved", f"pid={fast.pid} ", "gc=False")
            read = watcher.log.wait_for_all("event=dump-top", f"pid={slow.pid} ", "gc=True")
            named = watcher.log.wait_for_all("event=dump-top", f"pid={fast.pid} ", "gc=True")
        finally:
            slow.stop()
            fast.stop()
    slow_read = metadata_of(read)
    assert slow_read["top_error"].startswith("deadline: "), slow_read
    read_started = slow_read["top_read"]["started_monotonic"]
    read_seconds = slow_read["top_read"]["seconds"]
    assert read_seconds >= 0.5
    timings = metadata_of(fetched)["timings"]
    detected, fetch_started = timings["detected_monotonic"], timings["fetch_started_monotonic"]
    assert read_started < detected, "the second crossed before the read began: no test"
    assert fetch_started < read_started + read_seconds
    assert fetch_started - detected < read_seconds / 2  # not behind the read: a part of it
    assert 'top="main.fast ' in named  # and its own dumps were read, after the slow one
