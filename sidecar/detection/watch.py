"""What every detector shares: the watch it is given and the protocol it keeps.

The loop samples the watched cgroups the detector says are due, captures what is over its
threshold, then calls `detector.wait()`. A detector decides how long that wait is and may
end it early. This module imports no other detection module; each mechanism lives in one
of its own (`poll`, `thresholds` for cgroup v1 eventfds, `adaptive` with `inotify` for
cgroup v2), `router` gives each watch the best signal its cgroup has, and `factory`
builds the detector DETECT_MODE names.
"""

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from sidecar import prom
from sidecar.cgroup import MemoryCgroup

# What can end a detector's wait: a cgroup v2 memory event (inotify on memory.events), a
# cgroup v1 usage threshold (its eventfd), `wake()` (new processes, shutdown), or the
# timeout (a sample is due).
WakeSource = Literal["memory.events", "eventfd", "wake", "timeout"]


@dataclass(frozen=True)
class Watch:
    """One process's cgroup as the detector needs it."""

    key: Hashable  # the loop's process key (pid + start time)
    cgroup: MemoryCgroup  # its folder held open: equal when it is the same folder
    threshold_bytes: int  # usage at which the loop wants to look at once

    @property
    def version(self) -> Literal[1, 2]:
        return self.cgroup.version


class Wakeups:
    """How many waits each source ended, counted in the children of a metric labelled by
    source once `count_in` is given one (nothing is counted before). A wait that several
    sources end at once counts once for each. One `add` per source per wait: a dict lookup
    and a locked float add, well under a microsecond."""

    def __init__(self, sources: tuple[WakeSource, ...]) -> None:
        self.sources = sources
        self._children: dict[WakeSource, prom.Counter] = {}

    def count_in(self, counter: prom.Counter) -> None:
        """Count into `counter`'s children, one per source this detector has (made now, so
        each series is there at 0 before its first wake)."""
        self._children = {source: counter.labels(source) for source in self.sources}

    def add(self, source: WakeSource) -> None:
        child = self._children.get(source)
        if child is not None:
            child.inc()


class Detector(Protocol):
    mode: str  # named in logs and metrics: "poll", "events", "adaptive", ...
    wakeups: Wakeups  # what ended each wait (oomdump_detector_wakeups_total)

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
        """Block until it is time to sample again; return the keys whose event fired. What
        ended the wait is counted in `wakeups`."""

    def wake(self) -> None:
        """End a `wait` in progress early (shutdown, new processes)."""

    def close(self) -> None:
        """Release eventfds, threads and files."""
