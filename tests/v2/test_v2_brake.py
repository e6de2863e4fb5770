"""On a real cgroup v2 kernel, EMERGENCY_BRAKE=true: memory.high is set during the capture
and restored after it (every value the file took was recorded by the guest scenario);
where the container's cgroupfs is read-only, the brake says so and the capture goes on."""

import pytest

from tests.v2.conftest import Scenario
from tests.v2.guest_scenario import CRITICAL, LIMIT

pytestmark = pytest.mark.v2
PAGE = 4096


def test_memory_high_is_set_during_the_capture_and_restored(scenario: Scenario):
    values = [value for _at, value in scenario.results["memory_high"]["brake_host"]]
    assert values[0] == "max" and values[-1] == "max"
    assert len(values) == 3, values  # set once, restored once
    assert LIMIT * CRITICAL // 100 < int(values[1]) < LIMIT
    assert scenario.results["memory_high_after"]["brake_host"] == "max"
    engaged = [
        line["memory_high"]
        for line in scenario.log_events("brake", "brake-engaged")
        if line["cgroup"].endswith("/brake_host")
    ]
    assert len(engaged) == 1 and engaged[0].startswith("max->"), engaged
    # The kernel keeps memory.high in whole pages: it reads back rounded down.
    assert int(engaged[0].removeprefix("max->")) // PAGE * PAGE == int(values[1])
    released = scenario.log_events("brake", "brake-released")
    assert [r["memory_high"] for r in released if r["cgroup"].endswith("/brake_host")] == ["max"]


def test_a_read_only_container_cgroupfs_refuses_the_brake_and_the_capture_goes_on(scenario):
    # containerd mounts an unprivileged container's cgroupfs read-only, and the watcher
    # reaches the group through the container's own mount (/proc/<pid>/root/...).
    values = [value for _at, value in scenario.results["memory_high"]["brake_ctr"]]
    assert values == ["max"]
    failed = scenario.log_events("brake", "brake-failed")
    assert any("Read-only file system" in line["reason"] for line in failed), failed
    assert scenario.dumps("brake", scenario.leak("brake_ctr")["pid"])
