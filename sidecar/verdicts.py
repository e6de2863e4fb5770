"""Pure decisions about one watched process, with the reason each one gives.

`missed` says whether a process that left the table was missed (over its threshold, or
OOM-killed, with no profile saved since it crossed) and why; `dump_metadata` is the
schema of the `.json` saved beside each profile (DESIGN.md)."""

from typing import Any, NamedTuple

from oomdump import __version__
from sidecar.cgroup import MemorySample

MISSED_REASONS = (
    "killed-during-capture",
    "no-port-yet",
    "fetch-failed",
    "in-cooldown",
    "killed-before-capture",
)


class Gone(NamedTuple):
    """What the table knew of a process when it left."""

    over_since: float | None  # monotonic start of its last crossing, None when below
    last_capture: float | None  # monotonic time of its last saved dump
    had_ports: bool
    last_attempt_failed: bool
    oom_kills_at_watch: int | None  # its group's oom_kill count when first watched
    oom_kills_now: int | None  # None when the group is gone or does not say


class Missed(NamedTuple):
    reason: str  # one of MISSED_REASONS
    oom_killed: str  # "yes", "no" or "unknown"


def missed(gone: Gone, now: float, cooldown: float, during_capture: bool) -> Missed | None:
    """None when nothing was missed; else why nothing was saved."""
    if gone.oom_kills_now is None or gone.oom_kills_at_watch is None:
        oom_killed = "unknown"
    else:
        oom_killed = "yes" if gone.oom_kills_now > gone.oom_kills_at_watch else "no"
    crossed = gone.over_since is not None or oom_killed == "yes"
    since = gone.over_since if gone.over_since is not None else 0.0
    if not crossed or (gone.last_capture is not None and gone.last_capture >= since):
        return None
    if during_capture:
        reason = "killed-during-capture"
    elif not gone.had_ports:
        reason = "no-port-yet"
    elif gone.last_attempt_failed:
        reason = "fetch-failed"
    elif gone.last_capture is not None and now - gone.last_capture < cooldown:
        reason = "in-cooldown"
    else:
        reason = "killed-before-capture"
    return Missed(reason, oom_killed)


class Capture(NamedTuple):
    """One saved fetch and what triggered it, as the metadata records it."""

    pid: int
    comm: str
    endpoint: str
    port: int
    gc: bool
    sample: MemorySample
    trigger: str  # "event" or "sample"
    detected_at: float  # monotonic
    fetch_started: float  # monotonic
    fetch_seconds: float
    cgroup_path: str
    cgroup_version: int


def threshold_bytes(limit: int, critical_percent: int) -> int:
    return limit * critical_percent // 100


def dump_metadata(
    capture: Capture,
    *,
    pprof_path: str,
    critical_percent: int,
    metric: str,
    detect_mode: str,
    pod: str,
    namespace: str,
    node: str,
) -> dict[str, Any]:
    sample = capture.sample
    limit = sample.limit_bytes or 0
    return {
        "pid": capture.pid,
        "comm": capture.comm,
        "port": capture.port,
        "endpoint": capture.endpoint,
        "path": pprof_path + ("?gc=1" if capture.gc else ""),
        "gc": capture.gc,
        "usage": sample.usage_bytes,
        "raw_usage": sample.raw_usage_bytes,
        "inactive_file": sample.inactive_file_bytes,
        "limit": limit,
        "percent": round(100.0 * sample.usage_bytes / limit, 2) if limit else None,
        "threshold": critical_percent,
        "threshold_bytes": threshold_bytes(limit, critical_percent),
        "metric": metric,
        "trigger": capture.trigger,
        "detect_mode": detect_mode,
        "cgroup": capture.cgroup_path,
        "cgroup_version": capture.cgroup_version,
        "pod": pod,
        "namespace": namespace,
        "node": node,
        "timings": {
            "detected_to_fetch_start_ms": round(
                1000 * (capture.fetch_started - capture.detected_at), 3
            ),
            "fetch_ms": round(1000 * capture.fetch_seconds, 3),
            # CLOCK_MONOTONIC is system-wide: other processes on the node can compare.
            "detected_monotonic": capture.detected_at,
            "fetch_started_monotonic": capture.fetch_started,
        },
        "oomdump_version": __version__,
    }
