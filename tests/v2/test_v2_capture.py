"""On a real cgroup v2 kernel: DETECT_MODE=auto routes v2 to the adaptive poll, and the
watcher saves a heap dump of the real Go leak before the kernel OOM-kills it at memory.max.

The leaks grow 4 MiB/s in the ~60x slower emulated guest: correctness, not the race."""

import gzip

import pytest

from tests.v2.conftest import Scenario
from tests.v2.guest_scenario import CRITICAL, LIMIT

pytestmark = pytest.mark.v2

# leak -> the watcher that watches it (see guest_scenario.py)
WATCHED = {"ctr": "plain", "ctr2": "plain", "brake_host": "brake", "brake_ctr": "brake"}


def test_the_guest_kernel_has_cgroup_v2_with_the_memory_controller(scenario: Scenario):
    assert any(" - cgroup2 " in line for line in scenario.results["cgroup_mount"])
    assert "memory" in scenario.results["controllers"]


def _cgroup_seen_by_watcher(leak: dict) -> str:
    hierarchy, _, path = leak["seen_by_watcher"].partition("::")
    assert hierarchy == "0", leak["seen_by_watcher"]
    return path


@pytest.mark.parametrize("name", WATCHED)
def test_the_kernel_oom_killed_the_leak_at_memory_max(scenario: Scenario, name: str):
    leak = scenario.leak(name)
    assert leak["exit_code"] == -9  # SIGKILL
    assert leak["events_after"]["oom_kill"] == leak["events_before"]["oom_kill"] + 1


@pytest.mark.parametrize("name", WATCHED)
def test_the_watcher_watches_the_leak_with_its_v2_group_and_limit(scenario: Scenario, name: str):
    leak = scenario.leak(name)
    lines = scenario.log_events(WATCHED[name], "watching", pid=str(leak["pid"]))
    assert lines, scenario.watcher_log(WATCHED[name])
    assert lines[0]["cgroup"] == _cgroup_seen_by_watcher(leak)
    assert lines[0]["cgroup_version"] == "2"
    assert lines[0]["limit_bytes"] == str(LIMIT)
    assert lines[0]["threshold_bytes"] == str(LIMIT * CRITICAL // 100)


@pytest.mark.parametrize("watcher", ["plain", "brake"])
def test_auto_routes_v2_watches_to_the_adaptive_poll(scenario: Scenario, watcher: str):
    modes = scenario.log_events(watcher, "detector-mode", detect_mode="auto")
    watching = [line for line in modes if line["routes"] != "nothing watched"]
    assert watching, scenario.watcher_log(watcher)
    assert {line["mode"] for line in watching} == {"adaptive"}


@pytest.mark.parametrize("name", WATCHED)
def test_a_dump_is_saved_before_the_oom_kill(scenario: Scenario, name: str):
    leak = scenario.leak(name)
    dumps = scenario.dumps(WATCHED[name], leak["pid"])
    assert dumps, scenario.watcher_log(WATCHED[name])
    for profile, meta_path, metadata in dumps:
        with gzip.open(profile) as handle:
            assert handle.read(1)  # a real gzip'd pprof profile
        assert meta_path.stat().st_mtime < leak["exited_wall"]
        timings = metadata["timings"]
        # The guest's CLOCK_MONOTONIC: the watcher's and the scenario's clock alike.
        assert leak["started_monotonic"] < timings["fetch_started_monotonic"]
        assert timings["fetch_started_monotonic"] < leak["exited_monotonic"]


@pytest.mark.parametrize("name", WATCHED)
def test_the_metadata_carries_v2_the_limit_and_the_working_set(scenario: Scenario, name: str):
    leak = scenario.leak(name)
    dumps = scenario.dumps(WATCHED[name], leak["pid"])
    assert dumps
    for _profile, _meta_path, metadata in dumps:
        assert metadata["cgroup_version"] == 2
        assert metadata["cgroup"] == _cgroup_seen_by_watcher(leak)
        assert metadata["limit"] == LIMIT
        assert metadata["detect_mode"] == "adaptive"
        assert metadata["metric"] == "working_set"
        # The working set comes from memory.current minus memory.stat's inactive_file.
        assert isinstance(metadata["inactive_file"], int)
        assert metadata["usage"] == metadata["raw_usage"] - metadata["inactive_file"]
        assert LIMIT * CRITICAL // 100 <= metadata["usage"] < LIMIT
