"""On a real cgroup v2 kernel, the kernel's own memory event wakes the watcher: not a poll.

The `wake` watcher (WATCH_TIME=10s) watches a Go leak whose memory.max (64 GiB) puts its
threshold so far off that the adaptive plan samples it only every 10 s. Once it is watched,
the scenario sets memory.high just above the leak's usage; as the leak passes it the kernel
raises `high` in memory.events, and the watcher's detector-wake line (its wake's monotonic
time, the guest's CLOCK_MONOTONIC as the scenario's) must come after that and well before
the next scheduled sample. The OOM-killed leaks' watchers are woken the same way on their
way into memory.max (`max`, `oom_kill`), though their 100 ms poll could not tell the two
apart."""

from itertools import pairwise

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.detection.adaptive import DEFAULT_PLANNED_RATE
from sidecar.detection.router import WAKE_LOG_EVERY
from tests.v2.conftest import Scenario
from tests.v2.guest_scenario import CRITICAL, WAKE_LIMIT, WAKE_WATCH_TIME
from tests.v2.test_v2_capture import WATCHED, _cgroup_seen_by_watcher

pytestmark = pytest.mark.v2
MARGIN = 1.0  # seconds the wake must come before the next scheduled sample, at least


def seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def wake_lines(scenario: Scenario) -> list[dict[str, str]]:
    check = scenario.results["wake"]
    [watching] = scenario.log_events("wake", "watching", pid=str(check["pid"]))
    cgroup = watching["cgroup"]
    return scenario.log_events("wake", "detector-wake", source="memory.events", cgroup=cgroup)


def test_the_group_is_far_from_its_threshold_so_it_is_sampled_every_watch_time(scenario):
    check = scenario.results["wake"]
    assert check["watched"], scenario.watcher_log("wake")
    [watching] = scenario.log_events("wake", "watching", pid=str(check["pid"]))
    threshold = int(watching["threshold_bytes"])
    assert (int(watching["limit_bytes"]), threshold) == (WAKE_LIMIT, WAKE_LIMIT * CRITICAL // 100)
    # The adaptive plan: min(WATCH_TIME, headroom / planned rate), here the WATCH_TIME.
    headroom = threshold - check["usage_at_high_set"]
    assert headroom / DEFAULT_PLANNED_RATE > WAKE_WATCH_TIME


def test_the_kernel_raised_high_in_memory_events_once_memory_high_was_set(scenario):
    check = scenario.results["wake"]
    assert int(check["memory_high"]) > check["usage_at_high_set"]
    assert check["events_before"]["high"] == 0  # memory.high was max until then
    assert check["events_after"]["high"] > 0
    assert check["events_after"]["oom_kill"] == 0  # nowhere near memory.max
    assert scenario.results["inotify_modifies"].get("wake", 0) > 0


def test_memory_events_woke_the_watcher_before_its_next_scheduled_sample(scenario):
    check = scenario.results["wake"]
    lines = wake_lines(scenario)
    assert check["woke"] and lines, scenario.watcher_log("wake")
    first = lines[0]
    woke_at = float(first["monotonic"])
    # The kernel could raise `high` only once memory.high was set; no poll explains it:
    # the group's next sample was still a good part of WATCH_TIME away.
    assert check["high_set_monotonic"] < woke_at < check["woke_seen_monotonic"]
    assert MARGIN < seconds(first["next_sample_in"]) <= WAKE_WATCH_TIME


def test_a_group_is_logged_at_most_once_per_wake_log_interval(scenario):
    times = [float(line["monotonic"]) for line in wake_lines(scenario)]
    assert all(later - earlier >= WAKE_LOG_EVERY for earlier, later in pairwise(times))


def test_the_wake_is_counted_by_source_on_metrics(scenario):
    check = scenario.results["wake"]
    assert "metrics" in check, check.get("metrics_error")
    counts = {
        sample.labels["source"]: sample.value
        for family in text_string_to_metric_families(check["metrics"])
        if family.name == "oomdump_detector_wakeups"
        for sample in family.samples
        if sample.name == "oomdump_detector_wakeups_total"
    }
    assert set(counts) == {"memory.events", "eventfd", "wake", "timeout"}
    said = sum(
        int(line["wakes"])
        for line in wake_lines(scenario)
        if float(line["monotonic"]) < check["scraped_monotonic"]
    )
    assert counts["memory.events"] >= said >= 1
    assert counts["eventfd"] == 0  # no cgroup v1 here


@pytest.mark.parametrize("name", WATCHED)
def test_a_leak_driven_into_memory_max_wakes_its_watcher_by_memory_events(scenario, name):
    leak = scenario.leak(name)
    lines = scenario.log_events(
        WATCHED[name], "detector-wake", source="memory.events", cgroup=_cgroup_seen_by_watcher(leak)
    )
    during = [
        line
        for line in lines
        if leak["started_monotonic"] < float(line["monotonic"]) <= leak["exited_monotonic"]
    ]
    # Many wakes on the way to the kill (the group's first is logged at once), one line: the
    # kernel raises its events within the last seconds of the leak, under WAKE_LOG_EVERY.
    assert len(during) == 1, lines
