"""The pure decisions: was a process that left missed, and why; the dump's metadata."""

import pytest

from sidecar.cgroup import MemorySample
from sidecar.verdicts import Capture, Gone, Missed, dump_metadata, missed

MiB = 1024 * 1024
QUIET = Gone(None, None, True, False, 0, 0)  # never over, never OOM-killed


def test_a_process_that_never_crossed_and_was_not_oom_killed_was_not_missed() -> None:
    assert missed(QUIET, now=10.0, cooldown=30.0, during_capture=False) is None


def test_captured_during_its_last_crossing_was_not_missed() -> None:
    gone = QUIET._replace(over_since=5.0, last_capture=5.1, oom_kills_now=1)
    assert missed(gone, 10.0, 30.0, False) is None


@pytest.mark.parametrize(
    ("changes", "during", "expected"),
    [
        ({"over_since": 5.0}, True, "killed-during-capture"),
        ({"over_since": 5.0, "had_ports": False}, False, "no-port-yet"),
        ({"over_since": 5.0, "last_attempt_failed": True}, False, "fetch-failed"),
        ({"over_since": 5.0, "last_capture": 1.0}, False, "in-cooldown"),
        ({"over_since": 5.0, "last_capture": 1.0 - 60}, False, "killed-before-capture"),
        # Killed between two samples: never seen over, but the kernel counted the kill.
        ({"oom_kills_now": 1}, False, "killed-before-capture"),
    ],
)
def test_why_nothing_was_saved(changes: dict, during: bool, expected: str) -> None:
    verdict = missed(QUIET._replace(**changes), 10.0, 30.0, during)
    assert verdict is not None and verdict.reason == expected


def test_whether_the_kernel_killed_it_is_said_as_known() -> None:
    over = QUIET._replace(over_since=5.0)
    assert missed(over._replace(oom_kills_now=2), 10, 30, False) == Missed(
        "killed-before-capture", "yes"
    )
    assert missed(over, 10, 30, False) == Missed("killed-before-capture", "no")
    gone_group = over._replace(oom_kills_now=None)
    assert missed(gone_group, 10, 30, False) == Missed("killed-before-capture", "unknown")


def test_metadata_has_the_documented_fields() -> None:
    sample = MemorySample(200 * MiB, 210 * MiB, 10 * MiB, 256 * MiB)
    capture = Capture(
        7, "app", "127.0.0.1:6060", 6060, True, sample, "event", 1.0, 1.002, 0.01, "/pod/app", 2
    )
    metadata = dump_metadata(
        capture,
        pprof_path="/debug/pprof/heap",
        critical_percent=70,
        metric="working_set",
        detect_mode="adaptive",
        pod="web-0",
        namespace="shop",
        node="n1",
    )
    assert metadata["path"] == "/debug/pprof/heap?gc=1"
    assert metadata["percent"] == pytest.approx(78.12, abs=0.01)
    assert metadata["threshold_bytes"] == 256 * MiB * 70 // 100
    assert metadata["timings"]["detected_to_fetch_start_ms"] == pytest.approx(2.0)
    # DESIGN.md: usage, limit, percent, threshold, metric, trigger, pid, comm, port, timings
    for key in (
        "usage",
        "limit",
        "percent",
        "threshold",
        "metric",
        "trigger",
        "pid",
        "comm",
        "port",
        "timings",
        "pod",
        "namespace",
        "node",
        "cgroup",
    ):
        assert key in metadata
