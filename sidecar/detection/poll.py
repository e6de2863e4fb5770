"""The plain poll: sample every watch every interval (the fallback, and what the original
tools did)."""

import threading
from collections.abc import Hashable, Sequence

from sidecar.detection.watch import Wakeups, Watch


class PollDetector:
    """Sample every `interval` seconds, nothing more."""

    def __init__(self, interval: float) -> None:
        self.mode = "poll"
        self._interval = interval
        self._woken = threading.Event()
        self.wakeups = Wakeups(("wake", "timeout"))

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
        woken = self._woken.wait(self._interval)
        self._woken.clear()
        self.wakeups.add("wake" if woken else "timeout")
        return frozenset()

    def wake(self) -> None:
        self._woken.set()

    def close(self) -> None:
        pass
