"""How the watch loop learns that it should look again.

The loop samples the watched cgroups the detector says are due, captures what is over its
threshold, then calls `detector.wait()`. A detector decides how long that wait is and may
end it early:
`PollDetector` waits a fixed interval (the fallback, and what the original tools did);
event-driven detectors (cgroup v1 eventfd thresholds, an adaptive poll for cgroup v2)
live beside it and share this interface.
"""

import threading
from collections.abc import Hashable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal, Protocol

from sidecar.cgroup import MemoryCgroup
from sidecar.config import DETECT_MODES, MemoryMetric


@dataclass(frozen=True)
class Watch:
    """One process's cgroup as the detector needs it."""

    key: Hashable  # the loop's process key (pid + start time)
    cgroup: MemoryCgroup  # its folder held open: equal when it is the same folder
    threshold_bytes: int  # usage at which the loop wants to look at once

    @property
    def version(self) -> Literal[1, 2]:
        return self.cgroup.version


class Detector(Protocol):
    mode: str  # named in logs and metrics: "poll", "events", "adaptive", ...

    def prepare(self, watches: Sequence[Watch]) -> None:
        """Do the slow part of `watch(watches)` ahead, on the calling thread (the one that
        publishes the process table), so `watch` on the loop's thread is quick."""

    def watch(self, watches: Sequence[Watch]) -> None:
        """Replace the watched set (called when the process table changes)."""

    def due(self, key: Hashable, now: float) -> bool:
        """Whether the loop samples this watch on this pass (one whose event fired always is)."""

    def note(
        self, key: Hashable, usage_bytes: int, at: float, raw_usage_bytes: int | None = None
    ) -> None:
        """A sample the loop just took (monotonic seconds): the loop's metric, and raw usage
        (page cache included) when known; detectors plan the next sample from it."""

    def wait(self) -> frozenset[Hashable]:
        """Block until it is time to sample again; return the keys whose event fired."""

    def wake(self) -> None:
        """End a `wait` in progress early (shutdown, new processes)."""

    def close(self) -> None:
        """Release eventfds, threads and files."""


class PollDetector:
    """Sample every `interval` seconds, nothing more."""

    def __init__(self, interval: float) -> None:
        self.mode = "poll"
        self._interval = interval
        self._woken = threading.Event()

    def prepare(self, watches: Sequence[Watch]) -> None:
        pass

    def watch(self, watches: Sequence[Watch]) -> None:
        pass

    def due(self, key: Hashable, now: float) -> bool:
        return True

    def note(
        self, key: Hashable, usage_bytes: int, at: float, raw_usage_bytes: int | None = None
    ) -> None:
        pass

    def wait(self) -> frozenset[Hashable]:
        self._woken.wait(self._interval)
        self._woken.clear()
        return frozenset()

    def wake(self) -> None:
        self._woken.set()

    def close(self) -> None:
        pass


class Brake(Protocol):
    """Buys time for a capture by holding the kernel's OOM kill off (off by default)."""

    def holding(self, watch: Watch) -> AbstractContextManager[None]:
        """Engage around one capture; always restored on exit, and within a bounded time."""


class NoBrake:
    def holding(self, watch: Watch) -> AbstractContextManager[None]:
        return nullcontext()


def make_detector(mode: str, interval: float, metric: MemoryMetric = "working_set") -> Detector:
    """The detector for `DETECT_MODE`: `poll` (fixed interval), `events` (cgroup v1 eventfd
    thresholds), `adaptive` (a poll that tightens near the threshold, plus cgroup v2
    memory.events), or `auto` (events on v1 when cgroup.event_control is writable,
    adaptive on v2, poll otherwise). See `sidecar.fastdetect`."""
    if mode == "poll":
        return PollDetector(interval)
    if mode in ("events", "adaptive", "auto"):
        from sidecar.fastdetect import FastDetector  # imports this module

        return FastDetector(mode, interval, metric)
    raise ValueError(f"DETECT_MODE={mode!r} is not one of {', '.join(DETECT_MODES)}")


def make_brake(enabled: bool) -> Brake:
    """The brake for `EMERGENCY_BRAKE` (a no-op unless enabled; see `sidecar.brake`)."""
    if not enabled:
        return NoBrake()
    from sidecar.brake import EmergencyBrake  # imports this module

    return EmergencyBrake()
