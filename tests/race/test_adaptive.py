"""The adaptive poll for cgroup v2: the pure plan, and the detector on a prepared v2 tree
(this machine's cgroup v2 has no memory controller, so memory.current and memory.events
are regular files the test rewrites)."""

import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.detection.adaptive import AdaptivePlanner, plan_interval
from sidecar.detection.factory import make_detector
from sidecar.detection.router import FastDetector
from tests.cgroup_watch import watch_at

# The v2 groups here are prepared trees: this kernel has no v2 memory controller.
pytestmark = pytest.mark.usefixtures("prepared_cgroup_trees")

MiB = 1024 * 1024
GiB = 1024 * MiB


def v2_group(root: Path, name: str, current: int) -> Path:
    group = root / name
    group.mkdir()
    (group / "memory.current").write_text(f"{current}\n")
    (group / "memory.max").write_text(f"{256 * MiB}\n")
    (group / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    return group


def test_far_from_the_threshold_the_plain_interval_applies() -> None:
    assert plan_interval(10 * MiB, 2 * GiB, rate=0.0, interval=0.1) == 0.1


def test_near_the_threshold_the_poll_tightens_to_the_minimum() -> None:
    assert plan_interval(179 * MiB - 1, 179 * MiB, rate=0.0, interval=0.1) == 0.005


def test_fast_growth_tightens_the_poll() -> None:
    still = plan_interval(100 * MiB, 179 * MiB, rate=0.0, interval=0.1)
    growing = plan_interval(100 * MiB, 179 * MiB, rate=4 * GiB, interval=0.1)
    assert growing < still


def test_over_the_threshold_the_loop_has_seen_it() -> None:
    assert plan_interval(200 * MiB, 179 * MiB, rate=4 * GiB, interval=0.1) == 0.1


@given(
    usage=st.integers(0, 4 * GiB),
    closer=st.integers(0, 4 * GiB),
    threshold=st.integers(1, 4 * GiB),
    rate=st.floats(0, 10 * GiB),
)
def test_plan_stays_in_bounds_and_never_loosens_as_usage_nears(
    usage: int, closer: int, threshold: int, rate: float
) -> None:
    nearer = min(max(usage, closer), threshold - 1)
    farther = min(usage, nearer)
    far_wait = plan_interval(farther, threshold, rate, 0.1)
    near_wait = plan_interval(nearer, threshold, rate, 0.1)
    assert 0.005 <= near_wait <= far_wait <= 0.1


def test_bad_minimum_is_refused_with_the_bounds() -> None:
    with pytest.raises(ValueError, match=r"must be > 0 and <= 0\.1s"):
        AdaptivePlanner(0.1, min_interval=0.5)


def test_detector_tightens_near_the_threshold_on_a_v2_tree(tmp_path: Path) -> None:
    group = v2_group(tmp_path, "app", 10 * MiB)
    detector = make_detector("auto", 30.0)
    try:
        detector.watch([watch_at("app", group, 2, 179 * MiB)])
        assert isinstance(detector, FastDetector)
        assert detector.mode == "adaptive"
        detector.note("app", 10 * MiB, time.monotonic())
        assert detector.timeout() > 0.05
        # The loop's sample just before the step: nearly at the threshold.
        (group / "memory.current").write_text(f"{178 * MiB}\n")
        detector.note("app", 178 * MiB, time.monotonic())
        started = time.monotonic()
        assert detector.wait() == frozenset()
        assert time.monotonic() - started < 1.0, "wait() kept the 30 s interval"
    finally:
        detector.close()


def test_memory_events_change_ends_the_wait(tmp_path: Path) -> None:
    quiet = v2_group(tmp_path, "quiet", 10 * MiB)
    busy = v2_group(tmp_path, "busy", 10 * MiB)
    detector = make_detector("adaptive", 30.0)
    try:
        detector.watch(
            [watch_at("quiet", quiet, 2, 179 * MiB), watch_at("busy", busy, 2, 179 * MiB)]
        )
        writer = threading.Thread(
            target=(busy / "memory.events").write_text,
            args=("low 0\nhigh 3\nmax 1\noom 0\noom_kill 0\n",),
        )
        writer.start()
        writer.join()
        started = time.monotonic()
        assert detector.wait() == {"busy"}
        assert time.monotonic() - started < 10.0
    finally:
        detector.close()


def test_wake_ends_the_wait(tmp_path: Path) -> None:
    detector = make_detector("adaptive", 30.0)
    try:
        detector.watch([watch_at("app", v2_group(tmp_path, "app", MiB), 2, 179 * MiB)])
        threading.Thread(target=detector.wake).start()
        started = time.monotonic()
        assert detector.wait() == frozenset()
        assert time.monotonic() - started < 10.0
    finally:
        detector.close()


def test_auto_routes_each_watch_to_what_its_cgroup_offers(tmp_path: Path) -> None:
    v1_without_events = tmp_path / "v1"
    v1_without_events.mkdir()
    detector = make_detector("auto", 0.1)
    try:
        detector.watch(
            [
                watch_at("v2", v2_group(tmp_path, "app", MiB), 2, 179 * MiB),
                watch_at("v1", v1_without_events, 1, 179 * MiB),
            ]
        )
        # v1 without a writable cgroup.event_control: the adaptive poll, not the plain one.
        assert detector.routes() == {"v2": "adaptive", "v1": "adaptive"}
        assert detector.mode == "adaptive"
    finally:
        detector.close()


def test_only_the_watch_near_its_threshold_is_sampled_at_the_tight_pace(tmp_path: Path) -> None:
    """The poll tightens for the watch that nears its threshold, not for every watch."""
    detector = make_detector("adaptive", 0.1)
    try:
        near = v2_group(tmp_path, "near", 178 * MiB)
        far = v2_group(tmp_path, "far", 10 * MiB)
        detector.watch([watch_at("near", near, 2, 179 * MiB), watch_at("far", far, 2, 179 * MiB)])
        now = 1000.0
        assert detector.due("near", now) and detector.due("far", now)
        detector.note("near", 178 * MiB, now)
        detector.note("far", 10 * MiB, now)
        soon = now + 0.005
        assert detector.due("near", soon)
        assert not detector.due("far", soon)
        assert detector.due("far", now + 0.1)
    finally:
        detector.close()
