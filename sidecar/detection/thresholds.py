"""cgroup v1 memory thresholds: the kernel signals an eventfd the moment usage crosses one.

Writing `"<eventfd> <fd of memory.usage_in_bytes> <bytes>"` to the group's
`cgroup.event_control` arms a threshold; the kernel signals the eventfd in the same
millisecond usage crosses it (in either direction) and also when the group is removed.
Every file is opened through the group's held folder (`sidecar.cgroupfs`), never by path.
A removed group signals the eventfd and its threshold is disarmed for good: its processes
are gone with it, and a restarted container is a new process in a new group, watched anew
from /proc/<pid>/cgroup (nothing is re-armed by a path the app could redirect).

The kernel compares `memory.usage_in_bytes`, page cache included; the watcher's default
metric is the working set (usage - inactive_file). So each watch gets a second threshold,
higher by the page-cache gap seen when it is armed, and the kernel wakes the watcher again
when the working set is likely over too: without it, a leak in a group holding some page
cache was caught by the gap poll (2 ms then) instead of the event (p50 0.8 -> 2.7 ms on
burst leaks with 448 KiB of page cache). When usage crossed but the working set did not
for longer (the gap grew), `ThresholdSet.correct` re-arms it from the gap of then
(measured: without that, 40% of burst leaks were missed in events mode, with it none).
"""

import os
import threading
from collections.abc import Hashable
from contextlib import suppress
from dataclasses import dataclass, replace

from sidecar import cgroup, log
from sidecar.detection.watch import Watch

EVENT_CONTROL = "cgroup.event_control"
USAGE_FILE = "memory.usage_in_bytes"


class ThresholdError(OSError):
    """A threshold could not be armed; the message says why (the watch falls back to polling)."""


def events_unavailable(group: cgroup.MemoryCgroup) -> str | None:
    """Why eventfd thresholds cannot be armed on `group`, or None when they can."""
    if group.version != 1 or not group.folder.has(EVENT_CONTROL):
        return f"{group.path}/{EVENT_CONTROL} does not exist (not a cgroup v1 memory group)"
    if not group.folder.has(USAGE_FILE):
        return f"{group.path}/{USAGE_FILE} does not exist"
    try:
        os.close(group.folder.open(EVENT_CONTROL, write=True))
    except OSError as error:
        return (
            f"{group.path}/{EVENT_CONTROL} is not writable ({error.strerror}: read-only "
            "cgroupfs, or not privileged)"
        )
    return None


@dataclass
class Registration:
    """One armed threshold: the eventfd the kernel signals, and the usage file it watches."""

    watch: Watch
    eventfd: int
    usage_fd: int

    def close(self) -> None:
        for fd in (self.eventfd, self.usage_fd):
            with suppress(OSError):
                os.close(fd)

    def still_current(self) -> bool:
        """False once the group is gone (its files answer ENODEV)."""
        try:
            os.pread(self.usage_fd, 32, 0)
        except OSError:
            return False
        return True


def arm(watch: Watch) -> Registration:
    """Arm `watch.threshold_bytes` on the watch's group; ThresholdError says why not."""
    reason = events_unavailable(watch.cgroup)
    if reason is not None:
        raise ThresholdError(reason)
    folder = watch.cgroup.folder
    eventfd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    usage_fd = -1
    try:
        usage_fd = folder.open(USAGE_FILE)
        control = folder.open(EVENT_CONTROL, write=True)
        try:
            os.write(control, f"{eventfd} {usage_fd} {watch.threshold_bytes}".encode())
        finally:
            os.close(control)
    except OSError as error:
        os.close(eventfd)
        if usage_fd >= 0:
            os.close(usage_fd)
        raise ThresholdError(
            f"arming a threshold on {watch.cgroup.path}/{EVENT_CONTROL} failed: {error}"
        ) from error
    return Registration(watch, eventfd, usage_fd)


def drain(eventfd: int) -> bool:
    """Consume a pending signal; True when there was one."""
    try:
        os.eventfd_read(eventfd)
    except BlockingIOError:
        return False
    return True


@dataclass
class Armed:
    """A watch's threshold and, for the working set, the one higher by the page-cache gap."""

    registration: Registration
    correction: Registration | None

    def close(self) -> None:
        self.registration.close()
        if self.correction is not None:
            self.correction.close()


class ThresholdSet:
    """The armed thresholds of every v1 watch, kept in step with the watched set.

    Arming waits for an RCU grace period in the kernel (8-16 ms measured,
    bench/capture/arm_cost.py), so the thread that publishes a new watched set calls
    `prepare` first and the loop's `sync` only installs what is ready. Everything but
    `prepare` belongs to the loop's thread."""

    def __init__(self, prearm_gap: bool = False) -> None:
        """`prearm_gap`: the loop compares the working set, so arm the second threshold
        (higher by the page-cache gap) with each watch."""
        self._prearm_gap = prearm_gap
        self._by_key: dict[Hashable, Registration] = {}
        self._by_fd: dict[int, Registration] = {}
        self._stale: dict[Hashable, Watch] = {}
        self._corrections: dict[Hashable, Registration] = {}  # see correct()
        self._prepared: dict[Hashable, Armed] = {}  # armed by `prepare`, not installed yet
        self._prepared_lock = threading.Lock()

    def prepare(self, watches: list[Watch]) -> None:
        """Arm now, on the caller's thread, what `sync` would arm for `watches`."""
        for watch in watches:
            current = self._by_key.get(watch.key)
            if current is not None and current.watch == watch:
                continue
            with self._prepared_lock:
                ready = self._prepared.get(watch.key)
            if ready is not None and ready.registration.watch == watch:
                continue
            try:
                armed = self._arm(watch)
            except ThresholdError:
                continue  # `sync` tries again and says why
            with self._prepared_lock:
                replaced = self._prepared.pop(watch.key, None)
                self._prepared[watch.key] = armed
            if replaced is not None:
                replaced.close()

    def sync(self, watches: list[Watch]) -> dict[Hashable, str]:
        """Arm what is new or changed (taking what `prepare` armed), disarm what left;
        return the keys that could not be armed, with the reason (the caller polls those
        instead)."""
        wanted = {watch.key: watch for watch in watches}
        with self._prepared_lock:
            prepared, self._prepared = self._prepared, {}
        for key in [key for key in self._by_key if key not in wanted]:
            self._disarm(key)
        self._stale = {key: watch for key, watch in self._stale.items() if key in wanted}
        failed: dict[Hashable, str] = {}
        for key, watch in wanted.items():
            ready = prepared.pop(key, None)
            current = self._by_key.get(key)
            if current is not None and current.watch == watch and current.still_current():
                if ready is not None:
                    ready.close()
                continue
            if current is not None:
                self._disarm(key)
            if ready is None or ready.registration.watch != watch:
                if ready is not None:
                    ready.close()
                try:
                    ready = self._arm(watch)
                except ThresholdError as error:
                    failed[key] = str(error)
                    continue
            self._install(ready)
        for unused in prepared.values():
            unused.close()
        return failed

    def _arm(self, watch: Watch) -> Armed:
        """Arm `watch` (ThresholdError says why not) and, for the working set, its second
        threshold higher by the page-cache gap of now. Touches no table: any thread."""
        registration = arm(watch)
        if not self._prearm_gap:
            return Armed(registration, None)
        try:
            sampler = cgroup.Sampler(watch.cgroup, "working_set")
            try:
                now = sampler.sample(None)
            finally:
                sampler.close()
        except (OSError, ValueError):
            return Armed(registration, None)  # the loop's gap poll and `correct` cover it
        return Armed(registration, _arm_above(registration, now.inactive_file_bytes or 0))

    def _install(self, armed: Armed) -> None:
        self._add(armed.registration)
        if armed.correction is not None:
            self._set_correction(armed.correction)

    def _add(self, registration: Registration) -> None:
        self._by_key[registration.watch.key] = registration
        self._by_fd[registration.eventfd] = registration
        self._stale.pop(registration.watch.key, None)

    def _disarm(self, key: Hashable) -> None:
        for table in (self._by_key, self._corrections):
            registration = table.pop(key, None)
            if registration is not None:
                self._by_fd.pop(registration.eventfd, None)
                registration.close()

    def correct(self, key: Hashable, metric_bytes: int) -> None:
        """The loop's metric (e.g. working set = usage - inactive_file) sits below the
        threshold although usage crossed it: arm one more threshold, higher by the gap, so
        the kernel wakes us again when the metric itself is likely over."""
        registration = self._by_key.get(key)
        if registration is None:
            return
        try:
            usage = int(os.pread(registration.usage_fd, 32, 0))
        except (OSError, ValueError):
            return
        correction = _arm_above(registration, usage - metric_bytes)
        if correction is not None:
            self._set_correction(correction)

    def _set_correction(self, correction: Registration) -> None:
        key = correction.watch.key
        old = self._corrections.pop(key, None)
        if old is not None:
            self._by_fd.pop(old.eventfd, None)
            old.close()
        self._corrections[key] = correction
        self._by_fd[correction.eventfd] = correction

    def fds(self) -> list[int]:
        return list(self._by_fd)

    def fired(self, eventfd: int) -> Hashable | None:
        """The key whose threshold (or group removal) signalled `eventfd`, after draining it.
        A signal from a removed group disarms it for good (see the module's doc)."""
        registration = self._by_fd.get(eventfd)
        if registration is None or not drain(eventfd):
            return None
        key = registration.watch.key
        if not registration.still_current():
            log.info(
                "threshold-stale",
                cgroup=registration.watch.cgroup.path,
                reason="cgroup removed; its processes are gone",
            )
            self._disarm(key)
            self._stale[key] = registration.watch
        return key

    @property
    def stale(self) -> frozenset[Hashable]:
        return frozenset(self._stale)

    def armed(self) -> frozenset[Hashable]:
        return frozenset(self._by_key)

    def is_armed(self, key: Hashable) -> bool:
        return key in self._by_key

    def close(self) -> None:
        for key in list(self._by_key):
            self._disarm(key)
        self._stale.clear()
        with self._prepared_lock:
            prepared, self._prepared = self._prepared, {}
        for armed in prepared.values():
            armed.close()


def _arm_above(registration: Registration, gap: int) -> Registration | None:
    """Arm one more threshold on the registration's group, higher by `gap`; None when the
    gap is not positive or arming failed (the loop's gap poll covers it)."""
    if gap <= 0:
        return None
    watch = registration.watch
    corrected = replace(watch, threshold_bytes=watch.threshold_bytes + gap)
    try:
        extra = arm(corrected)
    except ThresholdError:
        return None
    # The kernel signals crossings relative to usage when armed: if usage has already
    # passed the corrected threshold meanwhile, it would wait for a downward crossing.
    try:
        already_over = int(os.pread(extra.usage_fd, 32, 0)) >= corrected.threshold_bytes
    except (OSError, ValueError):
        already_over = False
    if already_over:
        os.eventfd_write(extra.eventfd, 1)
    return extra
