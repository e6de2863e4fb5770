"""An adaptive poll for cgroup v2, which has no usage-threshold event.

Each watch is sampled again before the fastest growth we plan for could carry it from its
last sample to its threshold: `headroom / rate`, where `rate` is the larger of a planned
rate (a Go process allocating flat out grows ~0.65-1.1 GB/s here) and twice the growth
seen between the last samples. Far from the threshold that is the plain interval; near it
the wait shrinks to a few milliseconds. Reading `memory.current` costs ~10 µs, so the tight
end is cheap, and it only lasts while a process is close to its threshold.
"""

from collections.abc import Hashable
from typing import NamedTuple

GiB = 1024**3
DEFAULT_MIN_INTERVAL = 0.005
DEFAULT_PLANNED_RATE = 1.5 * GiB  # bytes per second


class Sample(NamedTuple):
    usage: int
    at: float  # monotonic seconds


def growth_rate(previous: Sample | None, latest: Sample) -> float:
    """Bytes per second between two samples (0 when shrinking or unknown)."""
    if previous is None or latest.at <= previous.at:
        return 0.0
    return max(0.0, (latest.usage - previous.usage) / (latest.at - previous.at))


def plan_interval(
    usage: int,
    threshold: int,
    rate: float,
    interval: float,
    min_interval: float = DEFAULT_MIN_INTERVAL,
    planned_rate: float = DEFAULT_PLANNED_RATE,
) -> float:
    """Seconds until the next sample of one watch (pure).

    At or above the threshold the loop has already seen it (and captured or is cooling
    down), so the plain interval applies."""
    if usage >= threshold:
        return interval
    fastest = max(planned_rate, 2.0 * rate)
    return min(interval, max(min_interval, (threshold - usage) / fastest))


class AdaptivePlanner:
    """When each watch is due again, learned from the samples the loop notes."""

    def __init__(
        self,
        interval: float,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        planned_rate: float = DEFAULT_PLANNED_RATE,
    ) -> None:
        if not 0 < min_interval <= interval:
            raise ValueError(
                f"adaptive poll: min interval {min_interval}s must be > 0 and <= {interval}s"
            )
        self.interval = interval
        self.min_interval = min_interval
        self.planned_rate = planned_rate
        self._thresholds: dict[Hashable, int] = {}
        self._last: dict[Hashable, Sample] = {}

    def watch(self, thresholds: dict[Hashable, int]) -> None:
        """Replace the watched set: key -> threshold bytes."""
        self._thresholds = dict(thresholds)
        for key in [key for key in self._last if key not in thresholds]:
            del self._last[key]

    def note(self, key: Hashable, usage: int, at: float) -> float:
        """Learn from a sample; the seconds until this watch is due again."""
        threshold = self._thresholds.get(key)
        if threshold is None:
            return self.interval
        latest = Sample(usage, at)
        rate = growth_rate(self._last.get(key), latest)
        self._last[key] = latest
        return plan_interval(
            usage, threshold, rate, self.interval, self.min_interval, self.planned_rate
        )
