"""The emergency brake (EMERGENCY_BRAKE=true, off by default): buy time for a capture.

RISK: while engaged the brake changes the limits of the application's own cgroup.
- cgroup v2: `memory.high` is set just above current usage (or the threshold); the kernel
  then throttles the group's allocations (reclaim and sleep) instead of letting them race
  to `memory.max`. The application is slowed, not killed, for at most `max_hold` seconds.
- cgroup v1: `memory.oom_control` oom_kill_disable=1, and `memory.limit_in_bytes` raised by
  a bounded amount (1/8 of the limit, at most 256 MiB). A task that reaches the limit
  freezes instead of dying, and the raise leaves the pprof handler room to answer. The
  node must have that much memory to spare.
Both are restored when the capture ends, or after `max_hold` seconds even if the capture
hangs. On v1, the OOM killer is re-enabled first; the old limit is written back as soon
as usage fits under it (retried for `restore_deadline` seconds: a process that kept
leaking is OOM-killed at the raised limit, which frees the room).

Every file is opened through the group's held folder, and every value written is one the
brake formats itself from numbers it parsed: what it read is never written back as text.
"""

import errno
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Protocol

from sidecar import log
from sidecar.cgroupfs import CgroupDir
from sidecar.detection.watch import Watch

MiB = 1024 * 1024
DEFAULT_MAX_HOLD = 2.0
DEFAULT_RESTORE_DEADLINE = 10.0
V1_RAISE_FRACTION = 8  # raise by limit / 8 ...
V1_RAISE_CAP = 256 * MiB  # ... but never by more than this


def _number(folder: CgroupDir, name: str) -> int:
    """A cgroup file holding one integer, parsed (ValueError when it holds anything else)."""
    text = folder.read(name, 64).strip()
    if not text.isdigit():
        raise ValueError(f"{name} holds {text[:32]!r}, not a number")
    return int(text)


def _limit_or_max(folder: CgroupDir, name: str) -> int | None:
    """memory.high / memory.max: a number, or None for `max`."""
    text = folder.read(name, 64).strip()
    if text == b"max":
        return None
    if not text.isdigit():
        raise ValueError(f"{name} holds {text[:32]!r}, not a number or max")
    return int(text)


def _format_limit(value: int | None) -> str:
    return "max" if value is None else str(value)


def _oom_kill_disable(folder: CgroupDir) -> bool:
    for line in folder.read("memory.oom_control", 4096).splitlines():
        name, _, value = line.partition(b" ")
        if name == b"oom_kill_disable":
            return value.strip() == b"1"
    raise OSError(f"{folder}/memory.oom_control has no oom_kill_disable line")


class Brake(Protocol):
    """Buys time for a capture by holding the kernel's OOM kill off (off by default)."""

    def holding(self, watch: Watch) -> AbstractContextManager[None]:
        """Engage around one capture; always restored on exit, and within a bounded time."""


class NoBrake:
    def holding(self, watch: Watch) -> AbstractContextManager[None]:
        return nullcontext()


def make_brake(enabled: bool) -> Brake:
    """The brake for `EMERGENCY_BRAKE` (a no-op unless enabled; see `sidecar.brake`)."""
    if not enabled:
        return NoBrake()
    return EmergencyBrake()


def v1_raise(limit: int) -> int:
    """How far the v1 brake raises `limit` (bounded)."""
    return min(limit // V1_RAISE_FRACTION, V1_RAISE_CAP)


def v2_high(usage: int, threshold: int, limit: int | None) -> int:
    """The temporary memory.high: a little above usage (or the threshold), below the max."""
    base = max(usage, threshold)
    margin = max(MiB, ((limit - base) // 8) if limit is not None and limit > base else 16 * MiB)
    return base + margin


class EmergencyBrake:
    """Engages around one capture; always restored on exit and within `max_hold` seconds."""

    def __init__(
        self,
        max_hold: float = DEFAULT_MAX_HOLD,
        restore_deadline: float = DEFAULT_RESTORE_DEADLINE,
    ) -> None:
        if max_hold <= 0 or restore_deadline <= 0:
            raise ValueError("brake: max_hold and restore_deadline must be > 0 seconds")
        self.max_hold = max_hold
        self.restore_deadline = restore_deadline
        self._lock = threading.Lock()
        self._held: set[CgroupDir] = set()

    def holding(self, watch: Watch) -> AbstractContextManager[None]:
        return self._hold(watch)

    @contextmanager
    def _hold(self, watch: Watch) -> Iterator[None]:
        with self._lock:
            if watch.cgroup.folder in self._held:  # another capture in this group holds it
                yield
                return
            self._held.add(watch.cgroup.folder)
        try:
            undo = self._engage_v1(watch) if watch.version == 1 else self._engage_v2(watch)
        except (OSError, ValueError) as error:
            log.warn(
                "brake-failed",
                cgroup=watch.cgroup.path,
                reason=f"could not engage, capturing without it: {error}",
            )
            self._release(watch.cgroup.folder)
            yield
            return
        restore = _once(lambda: self._restore(watch, undo))
        timer = threading.Timer(self.max_hold, restore)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            restore()

    def _release(self, folder: CgroupDir) -> None:
        with self._lock:
            self._held.discard(folder)

    def _restore(self, watch: Watch, undo: Callable[[], None]) -> None:
        try:
            undo()
        finally:
            self._release(watch.cgroup.folder)

    def _engage_v2(self, watch: Watch) -> Callable[[], None]:
        folder, label = watch.cgroup.folder, watch.cgroup.path
        old_high = _limit_or_max(folder, "memory.high")
        usage = _number(folder, "memory.current")
        high = v2_high(usage, watch.threshold_bytes, _limit_or_max(folder, "memory.max"))
        folder.write("memory.high", str(high))
        log.warn(
            "brake-engaged",
            cgroup=label,
            memory_high=f"{_format_limit(old_high)}->{high}",
            max_hold=f"{self.max_hold:g}s",
        )

        def undo() -> None:
            try:
                folder.write("memory.high", _format_limit(old_high))
                log.warn("brake-released", cgroup=label, memory_high=_format_limit(old_high))
            except OSError as error:
                log.error(
                    "brake-restore-failed",
                    cgroup=label,
                    memory_high=_format_limit(old_high),
                    reason=str(error),
                )

        return undo

    def _engage_v1(self, watch: Watch) -> Callable[[], None]:
        folder, label = watch.cgroup.folder, watch.cgroup.path
        was_disabled = _oom_kill_disable(folder)
        old_limit = _number(folder, "memory.limit_in_bytes")
        old_memsw = (
            _number(folder, "memory.memsw.limit_in_bytes")
            if folder.has("memory.memsw.limit_in_bytes")
            else None
        )
        raised = old_limit + v1_raise(old_limit)
        folder.write("memory.oom_control", "1")
        try:
            if old_memsw is not None and old_memsw < raised:
                folder.write("memory.memsw.limit_in_bytes", str(raised))
            folder.write("memory.limit_in_bytes", str(raised))
        except OSError as error:
            log.warn("brake-raise-refused", cgroup=label, reason=f"{error}; oom_kill_disable alone")
            raised = old_limit
        log.warn(
            "brake-engaged",
            cgroup=label,
            oom_kill_disable=1,
            limit=f"{old_limit}->{raised}",
            max_hold=f"{self.max_hold:g}s",
        )

        def undo() -> None:
            try:
                folder.write("memory.oom_control", "1" if was_disabled else "0")
            except OSError as error:
                log.error(
                    "brake-restore-failed",
                    cgroup=label,
                    oom_kill_disable=int(was_disabled),
                    reason=str(error),
                )
            if raised != old_limit and not self._try_lower(watch, old_limit, old_memsw):
                # Usage is above the old limit for now: keep trying apart from the loop.
                threading.Thread(
                    target=self._lower_limit,
                    args=(watch, old_limit, old_memsw),
                    name="brake-restore",
                    daemon=True,
                ).start()

        return undo

    def _try_lower(self, watch: Watch, old_limit: int, old_memsw: int | None) -> bool:
        """Write the old limits back; False while usage does not fit under them (EBUSY)."""
        folder = watch.cgroup.folder
        try:
            folder.write("memory.limit_in_bytes", str(old_limit))
            if old_memsw is not None:
                folder.write("memory.memsw.limit_in_bytes", str(old_memsw))
        except (FileNotFoundError, ProcessLookupError):
            return True  # the group is gone with its limits
        except OSError as error:
            # ENODEV/EBADF: removed, or the watch was dropped with its process.
            return error.errno in (errno.ENODEV, errno.EBADF)
        log.warn(
            "brake-released",
            cgroup=watch.cgroup.path,
            oom_kill_disable="restored",
            limit=old_limit,
        )
        return True

    def _lower_limit(self, watch: Watch, old_limit: int, old_memsw: int | None) -> None:
        end = time.monotonic() + self.restore_deadline
        while not self._try_lower(watch, old_limit, old_memsw):
            if time.monotonic() > end:
                log.error(
                    "brake-restore-failed",
                    cgroup=watch.cgroup.path,
                    limit=old_limit,
                    reason=f"usage stays above the old limit after {self.restore_deadline:g}s",
                )
                return
            time.sleep(0.02)


def _once(action: Callable[[], None]) -> Callable[[], None]:
    """`action` wrapped to run at most once, whichever thread calls it first."""
    lock = threading.Lock()
    done = False

    def run() -> None:
        nonlocal done
        with lock:
            if done:
                return
            done = True
        action()

    return run
