"""cgroup v1 eventfd thresholds against real groups, real Go processes, real crossings."""

import io
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sidecar.detection import thresholds
from sidecar.detection.factory import make_detector
from sidecar.detection.router import GAP_HOLD, GAP_POLL, NEAR, QUIET_INTERVAL, FastDetector
from sidecar.detection.thresholds import ThresholdError, arm, events_unavailable
from sidecar.detection.watch import Watch
from testinfra.cgroups import MemoryCgroup, MiB, memory_cgroup, require_cgroup_v1
from tests.cgroup_watch import group_at, watch_at

from .conftest import start_leaker, wait_for

pytestmark = pytest.mark.cgroup


def wait_for_key(detector: FastDetector, key: object, deadline: float) -> float:
    """Call wait() until `key` fires; the monotonic time it did."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if key in detector.wait():
            return time.monotonic()
    pytest.fail(f"{key} did not fire within {deadline}s")


def test_eventfd_fires_when_a_real_process_crosses(leaker: Path) -> None:
    require_cgroup_v1()
    threshold = 96 * MiB
    with memory_cgroup(256 * MiB, prefix="oomdump-race") as group:
        app = start_leaker(group, leaker, "gradual", "-rate", "64")
        detector = FastDetector("events", interval=2.0)
        try:
            detector.watch([watch_at("app", group.path, 1, threshold)])
            assert detector.routes() == {"app": "events"}
            assert detector.mode == "events"
            os.kill(app.pid, signal.SIGUSR1)
            wait_for_key(detector, "app", deadline=30)
            # Frozen at once: the checks below see the group as the event left it, however
            # long this thread waits for a CPU (the kill is ~2.5 s of leaking away).
            os.kill(app.pid, signal.SIGSTOP)
            usage_at_wake = group.usage_bytes()
            assert usage_at_wake >= threshold
            assert app.poll() is None, "the event came after the kill"
            assert group.oom_kills() == 0
        finally:
            detector.close()


def test_a_group_recreated_at_the_same_path_is_not_rearmed_through_it(
    leaker: Path, group_path: Path
) -> None:
    """The removed group's threshold is disarmed for good; a new group at the same path is
    another folder (a new watch, from /proc/<pid>/cgroup), never re-armed by its path."""
    threshold = 48 * MiB
    group_path.mkdir()
    (group_path / "memory.limit_in_bytes").write_text(str(128 * MiB))
    detector = FastDetector("events", interval=0.5)
    try:
        old = watch_at("app", group_path, 1, threshold)
        detector.watch([old])
        group_path.rmdir()  # the container is gone: the kernel signals the eventfd
        wait_for_key(detector, "app", deadline=10)
        assert detector._thresholds.stale == {"app"}
        assert detector._thresholds.armed() == frozenset()

        group_path.mkdir()  # restarted under the same path: a new group
        group = MemoryCgroup(group_path)
        group.set_limit(128 * MiB)
        detector.wait()
        assert detector._thresholds.armed() == frozenset(), "re-armed through a path"
        detector.watch([old])  # the old watch's folder is gone: polled, not armed
        assert detector.routes() == {"app": "poll"}

        new = watch_at("app", group_path, 1, threshold)
        assert new != old
        detector.watch([new])
        assert detector.routes() == {"app": "events"}
        app = start_leaker(group, leaker, "gradual", "-rate", "128")
        os.kill(app.pid, signal.SIGUSR1)
        wait_for_key(detector, "app", deadline=30)
        assert group.usage_bytes() >= threshold
    finally:
        detector.close()


def test_changed_watch_is_rearmed_on_the_new_group(group_path: Path) -> None:
    group_path.mkdir()
    other = group_path.with_name(group_path.name + "-b")
    other.mkdir()
    detector = FastDetector("events", interval=0.5)
    try:
        detector.watch([watch_at("app", group_path, 1, 10 * MiB)])
        (before,) = detector._thresholds.fds()
        detector.watch([watch_at("app", other, 1, 10 * MiB)])
        assert detector.routes() == {"app": "events"}
        assert detector._thresholds._by_key["app"].watch.cgroup.path == str(other)
        detector.watch([])
        assert detector._thresholds.fds() == []
        assert before not in detector._thresholds.fds()
    finally:
        detector.close()
        other.rmdir()


@pytest.mark.usefixtures("prepared_cgroup_trees")
def test_unavailable_event_control_falls_back_and_says_why(
    tmp_path: Path, log_lines: io.StringIO
) -> None:
    """auto falls back to the adaptive poll (events asked for explicitly: the plain one)."""
    (tmp_path / "memory.usage_in_bytes").write_text("0\n")
    explicit = make_detector("events", 0.1)
    try:
        explicit.watch([watch_at("app", tmp_path, 1, 10 * MiB)])
        assert explicit.routes() == {"app": "poll"}
    finally:
        explicit.close()
    log_lines.seek(0)
    log_lines.truncate()
    detector = make_detector("auto", 0.1)
    try:
        detector.watch([watch_at("app", tmp_path, 1, 10 * MiB)])
        assert detector.routes() == {"app": "adaptive"}
        assert detector.mode == "adaptive"
        warned = [line for line in log_lines.getvalue().splitlines() if "level=warn" in line]
        assert len(warned) == 1
        assert "event=detector-fallback" in warned[0]
        assert "cgroup.event_control does not exist" in warned[0]
        detector.watch([watch_at("app", tmp_path, 1, 10 * MiB)])  # said once, not every tick
        assert log_lines.getvalue().count("level=warn") == 1
        assert "event=detector-mode mode=adaptive detect_mode=auto" in log_lines.getvalue()
    finally:
        detector.close()


@pytest.mark.usefixtures("prepared_cgroup_trees")
def test_arm_names_the_reason_when_it_cannot(tmp_path: Path) -> None:
    assert "does not exist" in (events_unavailable(group_at(tmp_path, 1)) or "")
    with pytest.raises(ThresholdError, match=r"cgroup\.event_control does not exist"):
        arm(watch_at("app", tmp_path, 1, MiB))
    (tmp_path / "cgroup.event_control").write_text("")
    with pytest.raises(ThresholdError, match=r"memory\.usage_in_bytes does not exist"):
        arm(watch_at("app", tmp_path, 1, MiB))


def test_unknown_mode_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="auto, events, adaptive, poll"):
        make_detector("fast", 0.1)


def working_set(group: MemoryCgroup) -> int:
    return group.usage_bytes() - group.stat("total_inactive_file")


@contextmanager
def events_watch(threshold: int, interval: float) -> Iterator[tuple[FastDetector, MemoryCgroup]]:
    """An events detector watching "app" on a fresh 256 MiB v1 group; both gone after."""
    require_cgroup_v1()
    with memory_cgroup(256 * MiB, prefix="oomdump-race") as group:
        detector = FastDetector("events", interval=interval)
        try:
            detector.watch([watch_at("app", group.path, 1, threshold)])
            yield detector, group
        finally:
            detector.close()


def test_page_cache_gap_is_caught_without_waiting_for_the_interval(
    leaker: Path, tmp_path: Path
) -> None:
    """Usage (what the kernel's threshold sees) includes page cache; the loop's working set
    does not. After usage crosses, the detector samples closely (and, if the gap lasts,
    arms a threshold higher by the gap), so the loop sees the working set cross long before
    the 30 s interval."""
    require_cgroup_v1()
    threshold = 96 * MiB
    with memory_cgroup(256 * MiB, prefix="oomdump-race") as group:
        group.charge_page_cache(tmp_path, 48)  # inactive file pages
        assert group.usage_bytes() - working_set(group) >= 32 * MiB
        app = start_leaker(group, leaker, "gradual", "-rate", "64")
        detector = FastDetector("events", interval=30.0)  # only events wake it in time
        try:
            detector.watch([watch_at("app", group.path, 1, threshold)])
            os.kill(app.pid, signal.SIGUSR1)
            woken_below = 0
            end = time.monotonic() + 25
            while time.monotonic() < end:
                fired = detector.wait()
                metric = working_set(group)
                detector.note("app", metric, time.monotonic())
                if metric >= threshold:
                    break
                if "app" in fired:
                    woken_below += 1
            else:
                pytest.fail("the working set's crossing was not seen before the interval")
            assert woken_below >= 1, "usage was meant to cross before the working set"
            assert app.poll() is None
        finally:
            detector.close()


def test_a_lasting_page_cache_gap_gets_a_higher_threshold() -> None:
    with events_watch(64 * MiB, interval=5.0) as (detector, group):
        group.spawn(["sleep", "60"])  # something charged to the group: usage > 0
        wait_for(lambda: group.usage_bytes() > 0, deadline=10, what="usage charged")
        now = time.monotonic()
        detector._just_fired = {"app"}  # as if usage's eventfd had fired
        detector.note("app", 0, now)  # the loop's metric is below: the gap is usage
        assert "app" not in detector._thresholds._corrections  # sampled closely first
        detector.note("app", 0, now + GAP_HOLD)
        assert "app" in detector._thresholds._corrections  # the gap lasted: armed


@pytest.mark.usefixtures("prepared_cgroup_trees")
def test_page_cache_gap_is_sampled_closely_until_the_metric_crosses(tmp_path: Path) -> None:
    """While usage is over but the working set is not, the re-armed threshold may fire late;
    the detector then also wakes every GAP_POLL, for at most GAP_HOLD."""
    threshold = 64 * MiB
    with events_watch(threshold, interval=5.0) as (detector, _):
        assert detector.timeout() == pytest.approx(5.0)
        now = time.monotonic()
        detector._just_fired = {"app"}  # as if usage's eventfd had fired
        detector.note("app", threshold - MiB, now)  # ... and the working set is below
        assert detector.timeout() <= GAP_POLL
        detector.note("app", threshold - MiB // 2, time.monotonic())  # still in the gap
        assert detector.timeout() <= GAP_POLL
        detector.note("app", threshold, now + 0.02)  # the working set crossed
        assert detector.timeout() == pytest.approx(5.0)
        detector._just_fired = {"app"}
        detector.note("app", threshold - MiB, now + 1)
        detector.note("app", threshold - MiB, now + 1 + GAP_HOLD)  # bounded in time
        assert detector.timeout() == pytest.approx(5.0)


def test_events_watch_far_below_is_sampled_only_as_a_safety_net() -> None:
    """Far below its threshold an armed watch waits for the kernel: the loop samples it every
    QUIET_INTERVAL, not every interval; near the threshold, or over it in raw usage while
    the working set is below (page cache), it is sampled every interval again."""
    threshold = 64 * MiB
    with events_watch(threshold, interval=0.1) as (detector, _):
        now = time.monotonic()
        assert detector.due("app", now)  # a new watch is sampled at once
        detector.note("app", MiB, now, raw_usage_bytes=MiB)
        assert not detector.due("app", now + 0.1)
        assert not detector.due("app", now + QUIET_INTERVAL - 0.01)
        assert detector.timeout() > 0.1  # nothing else due: the loop sleeps longer
        now += QUIET_INTERVAL
        assert detector.due("app", now)
        near = threshold - MiB
        assert near >= threshold * NEAR
        detector.note("app", near, now, raw_usage_bytes=near)
        assert detector.due("app", now + 0.1)
        now += 0.1
        detector.note("app", MiB, now, raw_usage_bytes=threshold + MiB)  # page cache
        assert detector.due("app", now + 0.1)


def test_new_threshold_is_sampled_at_the_next_pass() -> None:
    with events_watch(64 * MiB, interval=0.1) as (detector, group):
        assert detector.due("app", 1000.0)
        detector.note("app", MiB, 1000.0, raw_usage_bytes=MiB)
        assert not detector.due("app", 1000.1)
        detector.watch([watch_at("app", group.path, 1, 2 * MiB)])  # the limit was lowered
        assert detector.due("app", 1000.1)


def test_stale_threshold_is_polled_every_interval(group_path: Path) -> None:
    """While a removed group's threshold waits to be re-armed, nothing would wake the loop:
    the watch is sampled every interval, however far below it is."""
    group_path.mkdir()
    (group_path / "memory.limit_in_bytes").write_text(str(128 * MiB))
    detector = FastDetector("events", interval=0.1)
    try:
        detector.watch([watch_at("app", group_path, 1, 48 * MiB)])
        group_path.rmdir()
        wait_for_key(detector, "app", deadline=10)
        assert detector._thresholds.stale == {"app"}
        detector.note("app", MiB, 1000.0, raw_usage_bytes=MiB)
        assert detector.due("app", 1000.1)
    finally:
        detector.close()


def test_second_threshold_armed_with_the_page_cache_gap_fires_on_the_working_set(
    leaker: Path, tmp_path: Path
) -> None:
    """With page cache in the group, raw usage crosses the threshold before the working set
    does. The second threshold, armed with the watch and higher by the gap, wakes the
    loop when the working set is over too (not a poll later)."""
    require_cgroup_v1()
    threshold = 96 * MiB
    with memory_cgroup(256 * MiB, prefix="oomdump-race") as group:
        cache = group.charge_page_cache(tmp_path, 32)
        detector = FastDetector("events", interval=30.0)  # only events wake it in time
        try:
            gap = group.stat("total_inactive_file")
            assert gap >= 16 * MiB, f"the file's pages should be inactive_file, got {gap}"
            detector.watch([watch_at("app", group.path, 1, threshold)])
            second = detector._thresholds._corrections["app"].watch.threshold_bytes
            assert second - threshold == pytest.approx(gap, abs=MiB)

            app = start_leaker(group, leaker, "gradual", "-rate", "32")
            os.kill(app.pid, signal.SIGUSR1)
            wait_for_key(detector, "app", deadline=30)  # raw usage crossed, ~0.5 s early
            # Frozen while we look, so a slow wake-up on a loaded machine cannot carry the
            # working set over before the check; the margin left is the ~0.5 s of leaking.
            os.kill(app.pid, signal.SIGSTOP)
            assert working_set(group) < threshold
            os.kill(app.pid, signal.SIGCONT)
            wait_for_key(detector, "app", deadline=30)
            # The kernel checks thresholds every 128 page events per CPU: within 1 MiB here.
            assert working_set(group) >= threshold - MiB
        finally:
            detector.close()
            cache.unlink()


def test_prepared_thresholds_are_installed_without_arming_on_the_loop(
    leaker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refresh thread arms (`prepare`, an RCU grace period each); the loop's `watch`
    only installs: arming there would fail here. The installed eventfd fires on a real
    crossing."""
    require_cgroup_v1()
    threshold = 64 * MiB
    with memory_cgroup(256 * MiB, prefix="oomdump-race") as group:
        detector = FastDetector("events", interval=30.0)
        try:
            watch = watch_at("app", group.path, 1, threshold)
            detector.prepare([watch])

            def no_arming_on_the_loop(watch: Watch) -> None:
                raise AssertionError(f"armed {watch} on the loop's thread")

            monkeypatch.setattr(thresholds, "arm", no_arming_on_the_loop)
            detector.watch([watch])
            assert detector.routes() == {"app": "events"}
            app = start_leaker(group, leaker, "gradual", "-rate", "128")
            os.kill(app.pid, signal.SIGUSR1)
            wait_for_key(detector, "app", deadline=30)
            assert group.usage_bytes() >= threshold
        finally:
            detector.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_prepared_threshold_for_a_superseded_watch_is_closed() -> None:
    require_cgroup_v1()
    with memory_cgroup(256 * MiB, prefix="oomdump-race") as group:
        detector = FastDetector("events", interval=30.0)
        try:
            first = watch_at("app", group.path, 1, 64 * MiB)
            changed = Watch("app", first.cgroup, 32 * MiB)  # the limit changed since
            before = open_fds()
            detector.prepare([first])
            prepared = open_fds() - before  # its eventfd and usage file (no page cache here)
            assert prepared == 2
            detector.watch([changed])
            assert detector._thresholds._by_key["app"].watch.threshold_bytes == 32 * MiB
            assert open_fds() - before == prepared  # the prepared pair closed, not leaked
        finally:
            detector.close()
