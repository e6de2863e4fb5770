"""The process table: which processes of the pod are watched, with their cgroup, limit,
threshold and ports, kept up to date from PROC_ROOT on the refresher's thread.

`look` is the cheap check of every WATCH_TIME (the PID list, each process's fd count);
`refresh` the full pass (every process's stat and cgroup, the limits), at once when `look`
sees a new PID and every REFRESH_INTERVAL otherwise. A process that leaves is `retire`d:
said when it was missed (`capture-missed`, with why), its files released.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar import cgroup, log, ports, procs, verdicts
from sidecar.config import Config
from sidecar.detection.watch import Watch
from sidecar.fetch import PprofFetcher
from sidecar.metrics import Metrics
from sidecar.notify import FAILED, Notice

# Seconds before a process found unwatchable is looked at again even though its
# /proc/<pid>/cgroup did not change (a limit set later on the same cgroup).
NOT_WATCHED_RECHECK = 30.0
# For this long after a process was found unwatchable, or first watched, every look
# re-reads its /proc/<pid>/cgroup: a process moved into its container's group just after
# it starts is resolved there at once. runc starts a container's process in the runtime's
# group (on a kubelet node, the pod's, whose limit is the sum of its containers') and
# moves it into the container's group before the exec.
YOUNG_DECISION = 2.0
# Ports are looked for every WATCH_TIME this long after a process is first watched (and
# while it listens on none); after that, every REFRESH_INTERVAL.
YOUNG_PORTS = 30.0


@dataclass
class Watched:
    process: procs.Process
    cgroup: cgroup.MemoryCgroup
    threshold_bytes: int
    endpoints: list[ports.Endpoint]
    sampler: cgroup.Sampler
    limit_bytes: int  # re-read by the refresh, not on every sample
    last_capture: float | None = None  # monotonic time of the last capture that saved a dump
    retry_after: float = 0.0
    capturing: bool = False
    captures: int = 0
    over_since: float | None = None  # first sample of the current crossing, None when below
    last_attempt_failed: bool = False
    oom_kills_at_watch: int | None = None  # the group's OOM-kill count when first watched
    watched_at: float = field(default_factory=time.monotonic)
    had_ports: bool = False  # ever listened on a port (a dying process's fds are gone)
    last_usage: int = 0  # the metric at the last sample
    last_heap: Any = None  # the last complete profile read (culprit.Reading.heap)
    last_heap_key: str = ""  # its dump's key
    failure_told: float | None = -1.0  # the crossing (over_since) a failure notice was sent for
    placement: str = ""  # ProcessTable._placement when first watched

    @property
    def watch(self) -> Watch:
        return Watch(self.process.key, self.cgroup, self.threshold_bytes)


def notice_of(
    watched: Watched,
    sample: cgroup.MemorySample,
    reason: str,
    location: str,
    detail: str = "",
    top: tuple[dict[str, Any], ...] = (),
) -> Notice:
    """The notice (an Event on the pod) for a watched process at `sample`."""
    limit = sample.limit_bytes or 0
    return Notice(
        reason,
        watched.process.pid,
        watched.process.comm,
        watched.cgroup.path,
        sample.usage_bytes,
        limit,
        round(100.0 * sample.usage_bytes / limit, 1) if limit else None,
        location,
        detail,
        top,
    )


def _all_root(placement: str) -> bool:
    """Every line of a /proc/<pid>/cgroup names the root group (`…:/`): an exiting process's."""
    return all(line.endswith(":/") for line in placement.splitlines() if line)


class ProcessTable:
    def __init__(
        self,
        config: Config,
        fetcher: PprofFetcher,
        metrics: Metrics,
        select: Callable[[procs.Process], bool],
        publish: Callable[[list[Watch]], None],
        notify: Callable[[Notice], None] = lambda notice: None,
    ) -> None:
        self.config = config
        self.fetcher = fetcher
        self.metrics = metrics
        self.select = select  # tests narrow the host's processes
        self._publish_watches = publish  # the detector's new view, when it changed
        self._notify = notify  # Events on the pod
        self.watched: dict[procs.ProcessKey, Watched] = {}
        self.lock = threading.Lock()  # guards `watched` (the loop reads it)
        self._reasons: dict[procs.ProcessKey, str] = {}
        # process -> (when, its /proc/<pid>/cgroup then) of a "not watched" decision
        self._decided: dict[procs.ProcessKey, tuple[float, str]] = {}
        self._self_pid = procs.own_pid(config.proc_root)
        self._ports = ports.PortFinder(config.proc_root)
        self._pids: frozenset[str] = frozenset()  # the PIDs the last full refresh saw

    def look(self) -> bool:
        """The cheap look of every WATCH_TIME: True when the PIDs changed (a full refresh is
        due); meanwhile the ports of young processes (watched for less than YOUNG_PORTS, or
        listening on none yet) are looked for, which is when a service opens them; a
        settled process's ports are looked at by the full refresh."""
        try:
            pids = procs.pid_names(self.config.proc_root)
        except OSError:
            return True  # the refresh says why
        if pids != self._pids:
            return True
        now = time.monotonic()
        for key, (when, placement) in list(self._decided.items()):
            if now - when < YOUNG_DECISION and self._placement(key.pid) != placement:
                return True
        for watched in list(self.watched.values()):
            if self._moved_while_young(watched, now):
                return True
        self._ports.begin()
        for watched in list(self.watched.values()):
            if not watched.endpoints or now - watched.watched_at < YOUNG_PORTS:
                self._refresh_ports(watched)
        return False

    def refresh(self) -> None:
        """Bring the process table up to date (on the refresher's thread while `run` runs;
        tests call it directly)."""
        proc_root = self.config.proc_root
        self._ports.begin()
        now = time.monotonic()
        self._pids = procs.pid_names(proc_root)
        candidates, skipped = procs.scan(proc_root, self._self_pid, self._pids)
        reasons: dict[procs.ProcessKey, str] = dict(skipped)
        seen: set[procs.ProcessKey] = set(skipped)
        changed = False
        for process in candidates:
            seen.add(process.key)
            known = self.watched.get(process.key)
            if known is not None:
                known.process = process  # an exec keeps pid and start time, not the name
                if not self._moved_while_young(known, now):
                    continue
                self._unwatch_moved(known)
                changed = True
            if not self.select(process):
                continue
            placement = self._placement(process.pid)
            decided = self._decided.get(process.key)
            if (
                decided is not None
                and now - decided[0] < NOT_WATCHED_RECHECK
                and decided[1] == placement
            ):
                reasons[process.key] = self._reasons[process.key]  # not re-resolved
                continue
            reason = self._try_watch(process, placement)
            if reason is None:
                changed = True
            else:
                reasons[process.key] = reason
                self._decided[process.key] = (now, placement)
        for key in [key for key in self.watched if key not in seen]:
            with self.lock:
                gone = self.watched.pop(key)
            self.fetcher.forget(gone.endpoints)
            self._ports.forget([key])
            if not gone.capturing:  # else the capture retires it when it ends
                self.retire(gone)
            log.info("process-gone", pid=key.pid, comm=gone.process.comm, captures=gone.captures)
            changed = True
        for watched in list(self.watched.values()):
            changed |= self._refresh_watched(watched)
        self._decided = {key: when for key, when in self._decided.items() if key in reasons}
        self._say_once(reasons)
        if changed:
            self._publish_watches([watched.watch for watched in self.watched.values()])
        self.metrics.watched.set(len(self.watched))

    def _moved_while_young(self, watched: Watched, now: float) -> bool:
        """Watched for less than YOUNG_DECISION and placed otherwise than when first seen
        (not while a capture runs: it holds the group's files). An exiting process leaves
        its groups for the root ones: that is no move, and it is reported as gone."""
        if now - watched.watched_at >= YOUNG_DECISION or watched.capturing:
            return False
        placement = self._placement(watched.process.pid)
        return placement not in ("", watched.placement) and not _all_root(placement)

    def _unwatch_moved(self, watched: Watched) -> None:
        """Stop watching the group a process was resolved to; the refresh resolves it anew."""
        with self.lock:
            self.watched.pop(watched.process.key, None)
        watched.sampler.close()
        watched.cgroup.close()
        log.info(
            "placement-changed",
            pid=watched.process.pid,
            comm=watched.process.comm,
            cgroup=watched.cgroup.path,
        )

    def _placement(self, pid: int) -> str:
        """Its /proc/<pid>/cgroup: the group a process is resolved to ("" when it is gone).
        Only the group counts, not the mounts or the root: the app controls those (a
        chroot), and runc moves the process into the container's group before it pivots,
        which the held group then outlives."""
        try:
            return (self.config.proc_root / str(pid) / "cgroup").read_text()
        except OSError:
            return ""

    def _try_watch(self, process: procs.Process, placement: str) -> str | None:
        """Start watching `process`; the reason when it cannot be watched."""
        try:
            resolved = cgroup.resolve(self.config.proc_root, process.pid)
        except FileNotFoundError:
            return "vanished while being looked at"
        except PermissionError as error:
            return f"cannot read its cgroup: {error}"
        except (cgroup.CgroupError, OSError, ValueError) as error:
            return f"cgroup not usable: {error}"
        sampler: cgroup.Sampler | None = None
        try:
            sampler = cgroup.Sampler(resolved, self.config.memory_metric)
            limit = sampler.limit()
        except (OSError, ValueError) as error:
            limit, reason = None, f"cgroup not usable: {error}"
            if isinstance(error, FileNotFoundError):
                reason = "vanished while being looked at"
        else:
            reason = "no memory limit"
        if sampler is None or limit is None:
            if sampler is not None:
                sampler.close()
            resolved.close()
            return reason
        watched = Watched(
            process,
            resolved,
            verdicts.threshold_bytes(limit, self.config.critical_percent),
            [],
            sampler,
            limit,
            oom_kills_at_watch=cgroup.oom_kills(resolved),
            placement=placement,
        )
        self._refresh_ports(watched)
        with self.lock:
            self.watched[process.key] = watched
        self._reasons.pop(process.key, None)
        log.info(
            "watching",
            pid=process.pid,
            comm=process.comm,
            cgroup=resolved.path,
            cgroup_version=resolved.version,
            limit_bytes=limit,
            threshold_bytes=watched.threshold_bytes,
            ports=",".join(str(e) for e in watched.endpoints) or "none-yet",
        )
        return None

    def _refresh_watched(self, watched: Watched) -> bool:
        """Re-read the limit and the ports; True when the detector's view changed."""
        self._refresh_ports(watched)
        try:
            limit = watched.sampler.limit()
        except (OSError, ValueError):
            return False
        if limit is None:
            return False
        watched.limit_bytes = limit
        threshold = verdicts.threshold_bytes(limit, self.config.critical_percent)
        if threshold == watched.threshold_bytes:
            return False
        log.info(
            "limit-changed", pid=watched.process.pid, limit_bytes=limit, threshold_bytes=threshold
        )
        watched.threshold_bytes = threshold
        return True

    def _refresh_ports(self, watched: Watched) -> None:
        if self.config.pprof_ports is not None:
            found = ports.fixed(self.config.pprof_ports)
        else:
            try:
                found = self._ports.find(watched.process.key, watched.process.pid)
            except OSError:
                return  # vanished or unreadable: keep what we knew
        if found == watched.endpoints:
            return
        self.fetcher.forget(set(watched.endpoints) - set(found))
        watched.endpoints = found
        watched.had_ports |= bool(found)
        # Connecting can stall (a full accept queue): never on the loop's thread.
        threading.Thread(target=self.fetcher.prepare, args=(found,), daemon=True).start()
        log.info(
            "ports",
            pid=watched.process.pid,
            comm=watched.process.comm,
            ports=",".join(str(e) for e in found) or "none",
        )

    def retire(self, gone: Watched, during_capture: bool = False) -> None:
        """A process that left the table: say whether it was missed, release its files."""
        self._report_if_missed(gone, during_capture)
        gone.sampler.close()
        gone.cgroup.close()

    def _report_if_missed(self, gone: Watched, during_capture: bool) -> None:
        """Say so when a process went over its threshold, or OOM-killed, with no profile
        saved since it crossed: the operator learns the watcher saw it, and why nothing is
        there."""
        now = time.monotonic()
        verdict = verdicts.missed(
            verdicts.Gone(
                gone.over_since,
                gone.last_capture,
                gone.had_ports,
                gone.last_attempt_failed,
                gone.oom_kills_at_watch,
                cgroup.oom_kills(gone.cgroup),
            ),
            now,
            self.config.cooldown,
            during_capture,
        )
        if verdict is None:
            return
        self.metrics.missed.labels(verdict.reason).inc()
        log.warn(
            "capture-missed",
            pid=gone.process.pid,
            comm=gone.process.comm,
            reason=verdict.reason,
            oom_killed=verdict.oom_killed,
            watched_for=f"{now - gone.watched_at:.3f}s",
        )
        sample = cgroup.MemorySample(gone.last_usage, gone.last_usage, None, gone.limit_bytes)
        detail = f"capture-missed: {verdict.reason} (oom_killed={verdict.oom_killed})"
        self._notify(notice_of(gone, sample, FAILED, "", detail))

    def _say_once(self, reasons: dict[procs.ProcessKey, str]) -> None:
        counts: dict[str, int] = {}
        for key, reason in reasons.items():
            label = reason.split(":")[0]
            counts[label] = counts.get(label, 0) + 1
            if self._reasons.get(key) != reason:
                log.info("not-watched", pid=key.pid, reason=reason)
        self._reasons = reasons
        self.metrics.unwatched.clear()
        for label, count in counts.items():
            self.metrics.unwatched.labels(label).set(count)
