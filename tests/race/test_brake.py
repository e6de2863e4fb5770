"""The emergency brake: engaged around a capture, restored on exit, and restored within
`max_hold` even when the capture never returns. v1 on real groups (with a real OOM kill
held off and then let through), v2 on a prepared tree."""

import io
import os
import signal
import threading
from pathlib import Path

import pytest

from sidecar.brake import EmergencyBrake, NoBrake, make_brake, v1_raise
from sidecar.detection.watch import Watch
from testinfra.cgroups import MemoryCgroup, MiB, memory_cgroup, require_cgroup_v1
from tests.cgroup_watch import watch_at

from .conftest import start_leaker, wait_for


def oom_kill_disable(group: MemoryCgroup) -> int:
    return group.oom_control()["oom_kill_disable"]


def hang_in_brake(brake: EmergencyBrake, watch: Watch, release: threading.Event) -> None:
    with brake.holding(watch):
        release.wait(60)  # a capture that never returns (until the test lets it go)


@pytest.mark.cgroup
def test_v1_engages_and_restores_around_a_capture() -> None:
    require_cgroup_v1()
    with memory_cgroup(128 * MiB, prefix="oomdump-race") as group:
        watch = watch_at("app", group.path, 1, 90 * MiB)
        with EmergencyBrake(max_hold=30).holding(watch):
            assert oom_kill_disable(group) == 1
            assert group.limit_bytes == 128 * MiB + v1_raise(128 * MiB) == 144 * MiB
        assert oom_kill_disable(group) == 0
        assert group.limit_bytes == 128 * MiB


@pytest.mark.cgroup
def test_v1_restored_within_max_hold_when_the_capture_hangs() -> None:
    require_cgroup_v1()
    with memory_cgroup(128 * MiB, prefix="oomdump-race") as group:
        release = threading.Event()
        capture = threading.Thread(
            target=hang_in_brake,
            args=(EmergencyBrake(max_hold=0.3), watch_at("app", group.path, 1, 90 * MiB), release),
        )
        capture.start()
        try:
            wait_for(lambda: oom_kill_disable(group) == 1, 10, "the brake to engage")
            wait_for(
                lambda: oom_kill_disable(group) == 0 and group.limit_bytes == 128 * MiB,
                10,
                "the brake to let go on its own",
            )
            assert capture.is_alive(), "the capture was meant to still hang"
        finally:
            release.set()
            capture.join()


@pytest.mark.cgroup
def test_v1_holds_a_real_oom_kill_off_then_lets_it_through(leaker: Path) -> None:
    require_cgroup_v1()
    limit = 64 * MiB
    with memory_cgroup(limit, prefix="oomdump-race") as group:
        app = start_leaker(group, leaker, "burst")
        release = threading.Event()
        capture = threading.Thread(
            target=hang_in_brake,
            args=(EmergencyBrake(max_hold=1.5), watch_at("app", group.path, 1, 40 * MiB), release),
        )
        capture.start()
        try:
            wait_for(lambda: oom_kill_disable(group) == 1, 10, "the brake to engage")
            os.kill(app.pid, signal.SIGUSR1)
            # Past the old limit, frozen at the raised one, and not killed.
            wait_for(lambda: group.oom_control()["under_oom"] == 1, 10, "the leak to freeze")
            assert group.max_usage_bytes() > limit
            assert app.poll() is None
            assert group.oom_kills() == 0
            # Let go: the kernel kills, and the old limit goes back once the room is free.
            assert group.wait_for_oom_kill(deadline=15)
            wait_for(lambda: group.limit_bytes == limit, 15, "the old limit to return")
            assert app.wait(10) == -signal.SIGKILL
        finally:
            release.set()
            capture.join()


def v2_group(tmp_path: Path) -> Path:
    (tmp_path / "memory.current").write_text(f"{180 * MiB}\n")
    (tmp_path / "memory.max").write_text(f"{256 * MiB}\n")
    (tmp_path / "memory.high").write_text("max\n")
    return tmp_path


@pytest.mark.usefixtures("prepared_cgroup_trees")
def test_v2_sets_memory_high_just_above_usage_and_restores(tmp_path: Path) -> None:
    group = v2_group(tmp_path)
    with EmergencyBrake(max_hold=30).holding(watch_at("app", group, 2, 179 * MiB)):
        high = int((group / "memory.high").read_text())
        assert 180 * MiB < high < 256 * MiB
    assert (group / "memory.high").read_text() == "max"


@pytest.mark.usefixtures("prepared_cgroup_trees")
def test_v2_restored_within_max_hold_when_the_capture_hangs(tmp_path: Path) -> None:
    group = v2_group(tmp_path)
    release = threading.Event()
    capture = threading.Thread(
        target=hang_in_brake,
        args=(EmergencyBrake(max_hold=0.3), watch_at("app", group, 2, 179 * MiB), release),
    )
    capture.start()
    try:
        wait_for(lambda: (group / "memory.high").read_text() != "max\n", 10, "the brake")
        wait_for(lambda: (group / "memory.high").read_text() == "max", 10, "the release")
        assert capture.is_alive()
    finally:
        release.set()
        capture.join()


@pytest.mark.usefixtures("prepared_cgroup_trees")
def test_a_brake_that_cannot_engage_never_blocks_the_capture(
    tmp_path: Path, log_lines: io.StringIO
) -> None:
    captured = []
    (tmp_path / "gone").mkdir()  # a folder without memory.high and memory.current
    with EmergencyBrake().holding(watch_at("app", tmp_path / "gone", 2, MiB)):
        captured.append(True)
    assert captured == [True]
    assert "event=brake-failed" in log_lines.getvalue()
    assert "gone" in log_lines.getvalue()


@pytest.mark.usefixtures("prepared_cgroup_trees")
def test_a_second_capture_in_the_same_group_does_not_stack(tmp_path: Path) -> None:
    group = v2_group(tmp_path)
    brake = EmergencyBrake(max_hold=30)
    with brake.holding(watch_at("a", group, 2, 179 * MiB)):
        engaged = (group / "memory.high").read_text()
        with brake.holding(watch_at("b", group, 2, 179 * MiB)):
            assert (group / "memory.high").read_text() == engaged
        assert (group / "memory.high").read_text() == engaged
    assert (group / "memory.high").read_text() == "max"


def test_factory_is_off_by_default() -> None:
    assert isinstance(make_brake(False), NoBrake)
    assert isinstance(make_brake(True), EmergencyBrake)
    with pytest.raises(ValueError, match="must be > 0"):
        EmergencyBrake(max_hold=0)
