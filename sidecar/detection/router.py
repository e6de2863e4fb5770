"""The detector that does not wait for the next poll.

Each watch is routed to the fastest signal its cgroup offers:
- `events`: cgroup v1 with a writable `cgroup.event_control` -> an eventfd threshold on
  `memory.usage_in_bytes` (the kernel wakes us at the crossing);
- `adaptive`: an adaptive poll (tightening near the threshold, `detection.adaptive`), plus
  inotify on cgroup v2 `memory.events`;
- `poll`: the plain interval, for what neither can serve.

DETECT_MODE=events routes v1 watches to events and the rest to the poll; =adaptive routes
every watch to the adaptive poll; =auto routes v1 to events when it can and everything
else to the adaptive poll (a v1 group whose cgroupfs is read-only, as under the
least-privilege profile, is polled adaptively, not at the plain interval). The route of
every watch, and why a watch fell back, is logged when it changes.

The detector also says which watches the loop samples on each pass (`due`), so the samples
go where they can matter: a poll watch every interval; an adaptive one when its plan says;
an events watch every interval while its usage is within NEAR of its threshold or over it
(the kernel does not signal a crossing that stops within its ratelimit of 128 page events
per CPU, a stale or closed threshold signals nothing, and a page-cache gap is polled), and
only every QUIET_INTERVAL while far below, where the armed threshold is what wakes the loop.

Every end of a wait is counted by what ended it (`Wakeups`: memory.events, eventfd, wake,
timeout; the kernel's notice that a watched group was removed ends a wait too, and counts
for none of them). A memory.events wake is also logged, `event=detector-wake`, with the
group, the wake's monotonic time and how far off that group's next scheduled sample was:
a group's first wake at once, then at most one line per WAKE_LOG_EVERY, carrying the count
of wakes since the group's last line. A group held at memory.high (as Kubernetes' memory
QoS holds pods near it) raises `high` at every allocation over it, many times a second for
as long as it stays there: one line a minute says so, the counter has the rate. The line is
written at the start of the next wait, once the pass the wake started has sampled and
launched its captures, so it never delays them.
"""

import math
import os
import select
import time
from collections import Counter
from collections.abc import Hashable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Literal

from sidecar import log
from sidecar.cgroupfs import CgroupDir
from sidecar.config import MemoryMetric
from sidecar.detection.adaptive import DEFAULT_MIN_INTERVAL, DEFAULT_PLANNED_RATE, AdaptivePlanner
from sidecar.detection.inotify import Inotify
from sidecar.detection.thresholds import ThresholdSet
from sidecar.detection.watch import WakeSource, Wakeups, Watch

Route = Literal["events", "adaptive", "poll"]
FastMode = Literal["events", "adaptive", "auto"]
MEMORY_EVENTS = "memory.events"
# After usage crossed but the working set did not (page cache that came after the watch was
# armed, or usage dipping right back as the Go runtime returns pages), that watch is sampled
# every GAP_POLL (poll()'s granularity) for at most GAP_HOLD; only a gap that lasts longer
# gets a re-armed threshold, because registering one blocks the loop for an RCU grace
# period (8-16 ms; the slow tail of the bench when it was done at once).
GAP_POLL = 0.001
GAP_HOLD = 1.0
NEAR = 0.9  # an events watch whose raw usage is at 90% of its threshold or more is "near"
# How often an events watch far below its threshold is sampled (at least the interval): a
# safety net only. At 10 samples a second, 20 idle watches cost the loop ~0.5% of a core.
QUIET_INTERVAL = 1.0
DUE_SLACK = 0.001  # a watch due within this is sampled now rather than after another wake
WAKE_LOG_EVERY = 60.0  # seconds between two detector-wake lines of one group, at least


@dataclass(eq=False)
class _EventsWatch:
    """One inotify watch on a group's memory.events. Processes of one group share it: the
    kernel gives one watch descriptor per inode, however often it is added."""

    wd: int
    cgroup: str  # the group's path, as the watcher names it in its other lines
    keys: set[Hashable] = field(default_factory=set)
    unsaid: int = 0  # wakes since this group's last detector-wake line
    said_at: float = -math.inf


class FastDetector:
    """Eventfd thresholds, an adaptive poll and the plain poll behind one `wait()`."""

    def __init__(
        self,
        mode: FastMode,
        interval: float,
        metric: MemoryMetric = "working_set",
        min_interval: float = DEFAULT_MIN_INTERVAL,
        planned_rate: float = DEFAULT_PLANNED_RATE,
    ) -> None:
        if mode not in ("events", "adaptive", "auto"):
            raise ValueError(f"detector mode {mode!r} is not one of events, adaptive, auto")
        if interval <= 0:
            raise ValueError(f"detector interval must be > 0 seconds, got {interval}")
        self._wanted: FastMode = mode
        self.mode: str = mode
        self._interval = interval
        self._quiet = max(interval, QUIET_INTERVAL)
        self._next: dict[Hashable, float] = {}  # when each watch is due to be sampled
        self._thresholds = ThresholdSet(prearm_gap=metric == "working_set")
        self._planner = AdaptivePlanner(interval, min(min_interval, interval), planned_rate)
        self._inotify = Inotify()
        self._events_watches: dict[int, _EventsWatch] = {}  # by watch descriptor
        self._events_watched: dict[Hashable, tuple[CgroupDir, _EventsWatch]] = {}
        self._wake_lines: list[tuple[_EventsWatch, float, float]] = []  # group, at, next in
        self.wakeups = Wakeups(("memory.events", "eventfd", "wake", "timeout"))
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._routes: dict[Hashable, Route] = {}
        self._thresholds_by_key: dict[Hashable, int] = {}
        self._just_fired: set[Hashable] = set()  # eventfd keys the loop has not sampled yet
        self._gap_until: dict[Hashable, float] = {}  # events keys in the page-cache gap
        self._fallback_said: set[tuple[Hashable, str]] = set()
        self._last_summary = ""
        self._poller = select.poll()
        self._polled: set[int] = set()
        self._register_fd(self._wake_fd)
        self._register_fd(self._inotify.fd)

    # -- routing -------------------------------------------------------------------------

    def _preferred(self, watch: Watch) -> Route:
        if watch.version == 1 and self._wanted in ("events", "auto"):
            return "events"
        if self._wanted == "adaptive" or (self._wanted == "auto" and watch.version == 2):
            return "adaptive"
        return "poll"

    def prepare(self, watches: Sequence[Watch]) -> None:
        """Arm the thresholds `watch` will want now, on the caller's thread: arming waits
        for the kernel (an RCU grace period, 8-16 ms) and the loop must not."""
        self._thresholds.prepare([w for w in watches if self._preferred(w) == "events"])

    def watch(self, watches: Sequence[Watch]) -> None:
        routes: dict[Hashable, Route] = {w.key: self._preferred(w) for w in watches}
        failed = self._thresholds.sync([w for w in watches if routes[w.key] == "events"])
        fallback: Route = "adaptive" if self._wanted == "auto" else "poll"
        for key, reason in failed.items():
            routes[key] = fallback
            if (key, reason) not in self._fallback_said:
                self._fallback_said.add((key, reason))
                log.warn("detector-fallback", key=key, route=fallback, reason=reason)
        self._fallback_said = {(k, r) for k, r in self._fallback_said if k in routes}
        adaptive = {w.key: w for w in watches if routes[w.key] == "adaptive"}
        self._planner.watch({key: w.threshold_bytes for key, w in adaptive.items()})
        self._sync_memory_events([w for w in adaptive.values() if w.version == 2])
        thresholds = {w.key: w.threshold_bytes for w in watches}
        # A watch that is new, rerouted or has a new threshold is sampled on the next pass.
        self._next = {
            key: due
            for key, due in self._next.items()
            if routes.get(key) == self._routes.get(key)
            and thresholds.get(key) == self._thresholds_by_key.get(key)
        }
        self._routes = routes
        self._thresholds_by_key = thresholds
        self._gap_until = {k: t for k, t in self._gap_until.items() if routes.get(k) == "events"}
        self._sync_fds()
        self._say_routes()

    def _sync_memory_events(self, watches: list[Watch]) -> None:
        wanted = {w.key: w.cgroup for w in watches}
        for key, (folder, events) in list(self._events_watched.items()):
            if key not in wanted or wanted[key].folder != folder:
                del self._events_watched[key]
                events.keys.discard(key)
                if not events.keys:  # the group's last watched process
                    self._inotify.remove(events.wd)
                    self._events_watches.pop(events.wd, None)
        for key, group in wanted.items():
            if key in self._events_watched:
                continue
            try:
                wd = group.folder.watch_file(MEMORY_EVENTS, self._inotify.add)
            except OSError as error:
                log.info("memory-events-unwatched", key=key, reason=str(error))
                continue
            events = self._events_watches.get(wd)
            if events is None:
                events = self._events_watches[wd] = _EventsWatch(wd, group.path)
            events.keys.add(key)
            self._events_watched[key] = (group.folder, events)

    def _say_routes(self) -> None:
        counts = Counter(self._routes.values())
        used = [route for route in ("events", "adaptive", "poll") if counts[route]]
        self.mode = "+".join(used) if used else self._wanted
        summary = ", ".join(f"{counts[route]} by {route}" for route in used)
        if summary != self._last_summary:
            self._last_summary = summary
            log.info(
                "detector-mode",
                mode=self.mode,
                detect_mode=self._wanted,
                routes=summary or "nothing watched",
            )

    def routes(self) -> dict[Hashable, Route]:
        """Each watched key's route (for logs, metrics and tests)."""
        return dict(self._routes)

    # -- waiting -------------------------------------------------------------------------

    def _register_fd(self, fd: int) -> None:
        self._poller.register(fd, select.POLLIN)
        self._polled.add(fd)

    def _sync_fds(self) -> None:
        wanted = {self._wake_fd, self._inotify.fd, *self._thresholds.fds()}
        for fd in self._polled - wanted:
            self._poller.unregister(fd)
        for fd in wanted - self._polled:
            self._poller.register(fd, select.POLLIN)
        self._polled = wanted

    def due(self, key: Hashable, now: float) -> bool:
        if self._next.get(key, now) > now + DUE_SLACK:
            return False
        self._next[key] = now + self._interval  # until `note` plans (a failed sample retries)
        return True

    def note(
        self, key: Hashable, usage_bytes: int, at: float, raw_usage_bytes: int | None = None
    ) -> None:
        route = self._routes.get(key)
        if route == "adaptive":
            self._next[key] = at + self._planner.note(key, usage_bytes, at)
        elif route == "events":
            if key in self._just_fired or key in self._gap_until:
                self._follow_gap(key, usage_bytes, at)
            raw = usage_bytes if raw_usage_bytes is None else raw_usage_bytes
            self._next[key] = at + self._event_watch_wait(key, raw)
        elif route == "poll":
            self._next[key] = at + self._interval

    def _event_watch_wait(self, key: Hashable, raw_usage_bytes: int) -> float:
        if key in self._gap_until:
            return GAP_POLL
        threshold = self._thresholds_by_key.get(key, 0)
        if raw_usage_bytes >= threshold * NEAR or not self._thresholds.is_armed(key):
            return self._interval
        return self._quiet

    def _follow_gap(self, key: Hashable, usage_bytes: int, at: float) -> None:
        below = usage_bytes < self._thresholds_by_key.get(key, 0)
        if key in self._just_fired:
            self._just_fired.discard(key)
            if below:
                # Usage crossed, the loop's metric did not (page cache): sample closely
                # until the metric crosses.
                self._gap_until[key] = at + GAP_HOLD
        elif key in self._gap_until and (not below or at >= self._gap_until[key]):
            del self._gap_until[key]
            if below:
                # Still in the gap after GAP_HOLD: arm a threshold higher by the gap, so
                # the kernel wakes the loop when the metric itself crosses.
                self._thresholds.correct(key, usage_bytes)
                self._sync_fds()

    def timeout(self) -> float:
        """Seconds the next `wait` may block at most: until the first watch is due."""
        if not self._next:
            return self._quiet
        return min(self._quiet, max(0.0, min(self._next.values()) - time.monotonic()))

    def wait(self) -> frozenset[Hashable]:
        if self._wake_lines:  # the last wake's pass is done: its lines cost it nothing now
            self._say_wakes()
        fired: set[Hashable] = set()
        sources: set[WakeSource] = set()
        ready = self._poller.poll(self.timeout() * 1000.0)
        for fd, _events in ready:
            if fd == self._wake_fd:
                sources.add("wake")
                _drain(self._wake_fd)
            elif fd == self._inotify.fd:
                changed = self._memory_events_fired()
                if changed:  # not only the notice that a removed watch is gone
                    sources.add("memory.events")
                    fired |= changed
            else:
                key = self._thresholds.fired(fd)
                if key is not None:  # not the signal of a removed group
                    sources.add("eventfd")
                    fired.add(key)
        if not ready:
            sources.add("timeout")
        for source in sources:
            self.wakeups.add(source)
        if self._thresholds.stale:
            self._sync_fds()
        self._just_fired = {key for key in fired if self._routes.get(key) == "events"}
        return frozenset(fired)

    def _memory_events_fired(self) -> set[Hashable]:
        """The keys of the groups whose memory.events changed; each group's wake noted for
        its detector-wake line (at most one per WAKE_LOG_EVERY)."""
        now = time.monotonic()
        fired: set[Hashable] = set()
        for wd in self._inotify.read():
            events = self._events_watches.get(wd)
            if events is None:  # a watch removed since the kernel queued its change
                continue
            fired |= events.keys
            events.unsaid += 1
            if now - events.said_at >= WAKE_LOG_EVERY:
                events.said_at = now
                due = min(self._next.get(key, now) for key in events.keys)
                self._wake_lines.append((events, now, due - now))
        return fired

    def _say_wakes(self) -> None:
        for events, at, next_sample_in in self._wake_lines:
            log.info(
                "detector-wake",
                source=MEMORY_EVENTS,
                cgroup=events.cgroup,
                wakes=events.unsaid,
                monotonic=f"{at:.6f}",
                next_sample_in=f"{next_sample_in:.3f}s",
            )
            events.unsaid = 0
        self._wake_lines.clear()

    def wake(self) -> None:
        os.eventfd_write(self._wake_fd, 1)

    def close(self) -> None:
        self._say_wakes()
        self._thresholds.close()
        self._inotify.close()
        os.close(self._wake_fd)


def _drain(fd: int) -> None:
    with suppress(BlockingIOError):
        os.eventfd_read(fd)
