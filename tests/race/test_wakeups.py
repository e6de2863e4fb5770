"""What ends each wait of a detector is counted by source (oomdump_detector_wakeups_total),
and a memory.events wake is logged once per group per WAKE_LOG_EVERY, after the pass it
started. The v2 groups are prepared trees (this kernel has no v2 memory controller, so
memory.events is a regular file the test rewrites; inotify on it is the real one); the
eventfd case is a real cgroup v1 group."""

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.detection import router
from sidecar.detection.poll import PollDetector
from sidecar.detection.router import FastDetector
from sidecar.detection.watch import Detector
from sidecar.metrics import Metrics
from testinfra.cgroups import memory_cgroup, require_cgroup_v1
from tests.cgroup_watch import watch_at
from tests.race.test_adaptive import GiB, MiB, v2_group
from tests.sidecar.upload_harness import fields

pytestmark = pytest.mark.usefixtures("prepared_cgroup_trees")
FAR = 64 * GiB  # a threshold the plan cannot near: the next sample is a whole interval off
EVENTS = "low 0\nhigh {high}\nmax 0\noom 0\noom_kill 0\n"


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def counted(metrics: Metrics) -> dict[str, float]:
    """Each source's count, as a scrape reads it."""
    return {
        labels["source"]: value
        for name, labels, value in metrics.registry.samples()
        if name == "oomdump_detector_wakeups_total"
    }


def counting(detector: Detector, metrics: Metrics) -> Detector:
    detector.wakeups.count_in(metrics.detector_wakeups)
    return detector


def wake_lines(log_lines: io.StringIO) -> list[dict[str, str]]:
    """The detector-wake lines written so far, as fields."""
    lines = [fields(line) for line in log_lines.getvalue().splitlines()]
    return [line for line in lines if line.get("event") == "detector-wake"]


def bump(group: Path, high: int) -> None:
    (group / "memory.events").write_text(EVENTS.format(high=high))


@pytest.fixture
def adaptive(metrics: Metrics) -> Iterator[FastDetector]:
    detector = FastDetector("adaptive", interval=30.0)
    counting(detector, metrics)
    try:
        yield detector
    finally:
        detector.close()


def test_every_source_is_counted_from_zero(
    tmp_path: Path, metrics: Metrics, adaptive: FastDetector
) -> None:
    assert counted(metrics) == {"memory.events": 0, "eventfd": 0, "wake": 0, "timeout": 0}
    group = v2_group(tmp_path, "app", 10 * MiB)
    adaptive.watch([watch_at("app", group, 2, FAR)])
    adaptive.wake()
    assert adaptive.wait() == frozenset()
    bump(group, 1)
    assert adaptive.wait() == {"app"}
    assert counted(metrics) == {"memory.events": 1, "eventfd": 0, "wake": 1, "timeout": 0}


def test_a_wait_that_runs_out_counts_as_a_timeout(tmp_path: Path, metrics: Metrics) -> None:
    detector = counting(FastDetector("adaptive", interval=0.01), metrics)
    try:
        detector.watch([watch_at("app", v2_group(tmp_path, "app", 10 * MiB), 2, FAR)])
        assert detector.wait() == frozenset()
        assert counted(metrics)["timeout"] == 1
    finally:
        detector.close()


def test_the_plain_poll_counts_its_wakes_and_timeouts(metrics: Metrics) -> None:
    detector = counting(PollDetector(0.01), metrics)
    assert counted(metrics) == {"wake": 0, "timeout": 0}  # it has no kernel source
    detector.wait()
    detector.wake()
    detector.wait()
    assert counted(metrics) == {"wake": 1, "timeout": 1}


def test_a_memory_events_wake_is_logged_after_its_pass_with_its_next_sample(
    tmp_path: Path, adaptive: FastDetector, log_lines: io.StringIO
) -> None:
    group = v2_group(tmp_path, "app", 10 * MiB)
    adaptive.watch([watch_at("app", group, 2, FAR)])
    sampled = time.monotonic()
    adaptive.note("app", 10 * MiB, sampled)  # far below: due again a whole interval later
    bump(group, 1)
    before = time.monotonic()
    assert adaptive.wait() == {"app"}
    after = time.monotonic()
    assert wake_lines(log_lines) == []  # not while the loop's pass samples and captures
    adaptive.wake()  # the pass is over: the loop waits again
    adaptive.wait()
    [line] = wake_lines(log_lines)
    assert line["source"] == "memory.events"
    assert line["cgroup"] == str(group)
    assert line["wakes"] == "1"
    assert before <= float(line["monotonic"]) <= after
    next_sample_in = float(line["next_sample_in"].removesuffix("s"))
    assert next_sample_in == pytest.approx(sampled + 30.0 - float(line["monotonic"]), abs=0.002)


def test_a_group_is_logged_at_most_once_per_interval_with_every_wake_counted(
    tmp_path: Path,
    metrics: Metrics,
    adaptive: FastDetector,
    log_lines: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(router, "WAKE_LOG_EVERY", 0.2)
    busy, other = v2_group(tmp_path, "busy", MiB), v2_group(tmp_path, "other", MiB)
    adaptive.watch([watch_at("busy", busy, 2, FAR), watch_at("other", other, 2, FAR)])
    bump(other, 1)
    high = 0
    deadline = time.monotonic() + 10
    # `busy` changes on every pass until its second line is out.
    while sum(line["cgroup"] == str(busy) for line in wake_lines(log_lines)) < 2:
        assert time.monotonic() < deadline, "no second line for busy within 10 s"
        time.sleep(0.01)  # paces the changes (some 20 in the bound), not a synchronisation
        high += 1
        bump(busy, high)
        assert "busy" in adaptive.wait()
        adaptive.wake()  # the pass is over: the next wait writes the lines of this wake
        assert adaptive.wait() == frozenset()
    lines = wake_lines(log_lines)
    busy_lines = [line for line in lines if line["cgroup"] == str(busy)]
    first, second = (float(line["monotonic"]) for line in busy_lines)
    assert second - first >= 0.2
    assert high > 2, "the changes between the lines are what is bounded"
    # The second line was the last wake: between them the lines account for every one.
    assert [int(line["wakes"]) for line in busy_lines] == [1, high - 1]
    assert [line["cgroup"] for line in lines].count(str(other)) == 1  # its own bound
    assert counted(metrics)["memory.events"] == high


def test_processes_of_one_group_share_its_watch(
    tmp_path: Path, metrics: Metrics, log_lines: io.StringIO
) -> None:
    """The kernel gives one inotify watch per inode: both processes fire on a change, the
    group is logged once, and the one left watched still fires after the other is gone."""
    detector = counting(FastDetector("adaptive", interval=2.0), metrics)
    try:
        group = v2_group(tmp_path, "pod", 10 * MiB)
        shell, app = watch_at("shell", group, 2, FAR), watch_at("app", group, 2, FAR)
        detector.watch([shell, app])
        bump(group, 1)
        assert detector.wait() == {"shell", "app"}
        detector.watch([app])  # the shell exited
        bump(group, 2)
        # A lost watch would end this wait at its 2 s timeout with nothing fired.
        assert detector.wait() == {"app"}
        detector.watch([])
        bump(group, 3)
        assert detector.wait() == frozenset()  # unwatched (the removal's notice counts not)
    finally:
        detector.close()
    assert [line["cgroup"] for line in wake_lines(log_lines)] == [str(group)]
    assert counted(metrics)["memory.events"] == 2


def test_close_says_the_last_wake(tmp_path: Path, log_lines: io.StringIO) -> None:
    detector = FastDetector("adaptive", interval=30.0)
    try:
        group = v2_group(tmp_path, "app", MiB)
        detector.watch([watch_at("app", group, 2, FAR)])
        bump(group, 1)
        assert detector.wait() == {"app"}
        assert wake_lines(log_lines) == []
    finally:
        detector.close()
    assert [line["cgroup"] for line in wake_lines(log_lines)] == [str(group)]


@pytest.mark.cgroup
def test_a_v1_threshold_crossing_counts_as_eventfd(tmp_path: Path, metrics: Metrics) -> None:
    require_cgroup_v1()
    with memory_cgroup(256 * MiB, prefix="oomdump-race") as group:
        detector = counting(FastDetector("events", interval=30.0), metrics)
        try:
            detector.watch([watch_at("app", group.path, 1, 16 * MiB)])
            assert detector.routes() == {"app": "events"}
            group.charge_page_cache(tmp_path, 32)  # usage crosses 16 MiB
            deadline = time.monotonic() + 20
            while "app" not in detector.wait():
                assert time.monotonic() < deadline, "the threshold did not fire within 20 s"
        finally:
            detector.close()
    seen = counted(metrics)
    assert seen["eventfd"] >= 1
    assert seen["memory.events"] == 0
