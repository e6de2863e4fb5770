"""The detector DETECT_MODE names."""

from sidecar.config import DETECT_MODES, MemoryMetric
from sidecar.detection.poll import PollDetector
from sidecar.detection.router import FastDetector
from sidecar.detection.watch import Detector


def make_detector(mode: str, interval: float, metric: MemoryMetric = "working_set") -> Detector:
    """The detector for `DETECT_MODE`: `poll` (fixed interval), `events` (cgroup v1 eventfd
    thresholds), `adaptive` (a poll that tightens near the threshold, plus cgroup v2
    memory.events), or `auto` (events on v1 when cgroup.event_control is writable,
    adaptive on v2, poll otherwise). See `sidecar.detection.router`."""
    if mode == "poll":
        return PollDetector(interval)
    if mode in ("events", "adaptive", "auto"):
        return FastDetector(mode, interval, metric)
    raise ValueError(f"DETECT_MODE={mode!r} is not one of {', '.join(DETECT_MODES)}")
