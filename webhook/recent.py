"""The ids of the notices this replica applied lately, so that a watcher's retry after a
lost answer (timeout, connection reset) is answered without counting the capture twice.

Keyed by (pod uid, notice id): an id counts only for the pod whose token sent it, so one
pod cannot silence another's notice by sending its id. A request holds a claim on its key
while it writes the Event; the same key arriving meanwhile waits for that claim instead of
writing too, and may apply itself when the first one failed (the claim is released).

One replica's memory only: the watcher opens a new connection for each attempt to the
Service's address, and the Service spreads connections over both replicas, so a retry
reaches the other replica about half of the time. There the ids the Event itself carries
(webhook.kubeapi.NOTICE_IDS) catch it; forgetting here (cap, age, a restart) costs an API
round trip, never a double count. Thread-safe; no clock of its own (injected).
"""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

# Ids remembered overall. Each pod's applied notices are rate-limited (by default a burst
# of 20, then 12 a minute: at most 200 within MAX_AGE), so 4096 keeps every id of 20 pods
# notifying at the full rate; an entry takes ~0.55 KiB (tracemalloc, 4096 entries with
# real-sized uids and Event names: 2.2 MiB), so that is the most this memory holds.
MAX_IDS = 4096
# How long an id is remembered. The watcher's retries of one notice end within 7 s of its
# first try (3 attempts, 2 s deadline each, 0.2 s and 0.4 s between), and a request already
# on the wire can still be served later than that (the webhook's own API deadlines);
# 15 minutes covers both many times over, and a quiet webhook's memory still empties.
MAX_AGE = 15 * 60.0


@dataclass(frozen=True)
class Applied:
    """What the first application of a notice answered."""

    event: str
    count: int


Key = tuple[str, str]  # (pod uid, notice id)


class RecentNotices:
    def __init__(
        self,
        max_ids: int = MAX_IDS,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_ids < 1 or max_age <= 0:
            raise ValueError("max_ids must be >= 1 and max_age > 0")
        self.max_ids = max_ids
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._applied: OrderedDict[Key, tuple[float, Applied]] = OrderedDict()  # oldest first
        # In-flight claims; as many as requests being served (the webhook caps those).
        self._claims: dict[Key, Future[None]] = {}

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._applied)

    def claim(self, uid: str, notice_id: str) -> "Applied | Future[None] | None":
        """Applied: a repeat of a notice applied within max_age (answer it, write nothing).
        A Future: another request holds the claim (wait for it, then claim again). None:
        the claim is the caller's, to end with applied() or release()."""
        key = (uid, notice_id)
        with self._lock:
            self._expire(self._clock())
            found = self._applied.get(key)
            if found is not None:
                return found[1]
            held = self._claims.get(key)
            if held is not None:
                return held
            self._claims[key] = Future()
            return None

    def applied(self, uid: str, notice_id: str, answer: Applied) -> None:
        """The caller's notice is applied: repeats get `answer` from now on."""
        key = (uid, notice_id)
        with self._lock:
            now = self._clock()
            self._applied[key] = (now, answer)
            self._applied.move_to_end(key)
            self._expire(now)
            held = self._claims.pop(key, None)
        if held is not None:
            held.set_result(None)

    def release(self, uid: str, notice_id: str) -> None:
        """The caller's notice failed: the next request with this id may apply it."""
        with self._lock:
            held = self._claims.pop((uid, notice_id), None)
        if held is not None:
            held.set_result(None)

    def _expire(self, now: float) -> None:
        applied = self._applied
        while applied:
            seen, _ = next(iter(applied.values()))
            if len(applied) <= self.max_ids and now - seen < self.max_age:
                return
            applied.popitem(last=False)
