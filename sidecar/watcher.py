"""The watch loop: one pass reads top to bottom.

    take the latest process table from the refresher, if it changed
    sample the processes whose event fired first, then the others the detector says are due
    capture each process at or over CRITICAL% whose cooldown has passed (on a thread)
    wait for the detector (a poll interval, or an event)

The process table is kept on a thread of its own, so the loop's reaction to an event never
waits for it. Every WATCH_TIME it looks cheaply: the list of PIDs (one listdir), and each
watched process's open-fd count (a new socket); a new PID (a container restarted, a
process forked) starts a full refresh at once, so a process is watched, its threshold
armed and its ports known within WATCH_TIME of its start, and OOMs at start-up are raced
like any other. The full refresh (every process's stat and cgroup, the limits) also runs
every `refresh_interval`. A process that goes while over its threshold with no profile
saved is reported (`capture-missed`, with why).

A capture never blocks the loop or another process's watch: each runs on a thread of its
own (at most one per process at a time), so a hanging port delays nothing else. The
cooldown is stamped after a capture that saved at least one profile; a capture that saved
nothing is retried after FAILED_RETRY while the process stays over the threshold.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from oomdump import __version__
from sidecar import cgroup, log, ports, procs
from sidecar.config import Config
from sidecar.detect import Brake, Detector, Watch
from sidecar.fetch import FetchResult, PprofFetcher
from sidecar.metrics import Metrics
from sidecar.spool import Dump, Spool, SpoolFull

FAILED_RETRY = 1.0  # seconds between capture attempts that saved nothing
# Captures in flight at once (each a thread with up to ports.MAX_ENDPOINTS fetches): an app
# that forks thousands of processes over the threshold cannot make thousands of threads.
MAX_CAPTURES = 8
# Seconds before a process found unwatchable is looked at again even though its
# /proc/<pid>/cgroup did not change (a limit set later on the same cgroup).
NOT_WATCHED_RECHECK = 30.0
# For this long after a process was found unwatchable, every look re-reads its
# /proc/<pid>/cgroup: a process that is moved into its container's group just after it
# starts (as a launcher does) is watched at once.
YOUNG_DECISION = 2.0


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

    @property
    def watch(self) -> Watch:
        return Watch(self.process.key, self.cgroup, self.threshold_bytes)


@dataclass(frozen=True)
class Trigger:
    sample: cgroup.MemorySample
    detected_at: float  # monotonic time of the sample that found the process over
    kind: str  # "event" (the detector fired) or "sample" (the poll saw it)


def threshold_bytes(limit: int, critical_percent: int) -> int:
    return limit * critical_percent // 100


@dataclass
class Watcher:
    config: Config
    detector: Detector
    brake: Brake
    spool: Spool
    fetcher: PprofFetcher
    metrics: Metrics
    on_dump: Callable[[Dump], None] = lambda dump: None
    select: Callable[[procs.Process], bool] = lambda process: True  # tests narrow the host
    refresh_interval: float = 1.0
    watched: dict[procs.ProcessKey, Watched] = field(default_factory=dict)
    _reasons: dict[procs.ProcessKey, str] = field(default_factory=dict)
    # process -> (when, its /proc/<pid>/cgroup then) of a "not watched" decision
    _decided: dict[procs.ProcessKey, tuple[float, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.refresh_interval = max(self.refresh_interval, self.config.watch_time)
        self._self_pid = procs.own_pid(self.config.proc_root)
        self._captures: set[threading.Thread] = set()
        self._ports = ports.PortFinder(self.config.proc_root)
        self._table_lock = threading.Lock()  # guards `watched` and `_pending_watches`
        self._pending_watches: list[Watch] | None = None
        self._loop_running = False
        self._refresh_wanted = threading.Event()
        self._pids: frozenset[str] = frozenset()  # the PIDs the last full refresh saw

    # -- the loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        log.info(
            "watch-start",
            detect_mode=self.detector.mode,
            critical=self.config.critical_percent,
            watch_time=self.config.watch_time,
            metric=self.config.memory_metric,
            proc_root=self.config.proc_root,
            dump_dir=self.config.dump_dir,
        )
        fired: frozenset[Any] = frozenset()
        self._loop_running = True
        refresher = threading.Thread(
            target=self._refresh_until, args=(stop,), name="refresh", daemon=True
        )
        refresher.start()
        try:
            while not stop.is_set():
                with self._table_lock:
                    pending, self._pending_watches = self._pending_watches, None
                    table = list(self.watched.values())
                if pending is not None:
                    self.detector.watch(pending)
                if fired:  # the processes that just fired first: they are racing a kill
                    table.sort(key=lambda watched: watched.process.key not in fired)
                now = time.monotonic()
                for watched in table:
                    if watched.process.key in fired or self.detector.due(watched.process.key, now):
                        self.check(watched, fired)
                fired = self.detector.wait()
        finally:
            self._refresh_wanted.set()
            refresher.join()
            self._loop_running = False
            # Each capture is bounded by its fetches' deadlines (two rounds) and the brake's
            # hold; shutdown waits that long at most, whatever the app does.
            end = time.monotonic() + 2 * self.config.fetch_timeout + 1.0
            for thread in list(self._captures):
                thread.join(max(0.0, end - time.monotonic()))
            for watched in self.watched.values():
                if not watched.capturing:  # a capture still running keeps its files
                    watched.sampler.close()
                    watched.cgroup.close()
            log.info("watch-stop", watched=len(self.watched))

    def _refresh_until(self, stop: threading.Event) -> None:
        full_due = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() >= full_due or self._refresh_wanted.is_set() or self.look():
                    self._refresh_wanted.clear()
                    self.refresh()
                    full_due = time.monotonic() + self.refresh_interval
            except Exception as error:  # keep watching what we know
                log.error("refresh-failed", error=repr(error))
            self._refresh_wanted.wait(self.config.watch_time)

    def look(self) -> bool:
        """The cheap look of every WATCH_TIME: True when the PIDs changed (a full refresh is
        due); meanwhile new sockets of watched processes are found (PortFinder lists a
        process's fds only when their count changed)."""
        try:
            pids = procs.pid_names(self.config.proc_root)
        except OSError:
            return True  # the refresh says why
        if pids != self._pids:
            return True
        now = time.monotonic()
        for key, (when, membership) in list(self._decided.items()):
            if now - when < YOUNG_DECISION and self._cgroup_membership(key.pid) != membership:
                return True
        self._ports.begin()
        for watched in list(self.watched.values()):
            self._refresh_ports(watched)
        return False

    def check(self, watched: Watched, fired: frozenset[Any]) -> None:
        """Sample one process's cgroup and start a capture when it is due."""
        now = time.monotonic()
        threshold = watched.threshold_bytes
        # Below the threshold the sampler skips memory.stat and reports raw usage, an upper
        # bound of the working set: enough to decide "not over", and for the adaptive poll
        # (it only polls sooner). After an event the real metric is read: the detector's
        # page-cache correction needs it.
        skip_below = None if watched.process.key in fired else threshold
        try:
            sample = watched.sampler.sample(watched.limit_bytes, skip_below)
        except (OSError, ValueError):
            if not procs.is_alive(self.config.proc_root, watched.process.key):
                self._refresh_wanted.set()  # it exited: drop it now
            return
        self.detector.note(watched.process.key, sample.usage_bytes, now, sample.raw_usage_bytes)
        if sample.usage_bytes < threshold:
            watched.over_since = None
            return
        if watched.over_since is None:
            watched.over_since = now
        if watched.capturing or now < watched.retry_after:
            return
        if watched.last_capture is not None and now - watched.last_capture < self.config.cooldown:
            return
        if len(self._captures) >= MAX_CAPTURES:
            return  # looked at again on the next pass
        watched.capturing = True
        kind = "event" if watched.process.key in fired else "sample"
        thread = threading.Thread(
            target=self._capture,
            args=(watched, Trigger(sample, now, kind)),
            name=f"capture-{watched.process.pid}",
            daemon=True,
        )
        self._captures.add(thread)
        thread.start()

    # -- the process table -----------------------------------------------------------------

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
                continue
            if not self.select(process):
                continue
            membership = self._cgroup_membership(process.pid)
            decided = self._decided.get(process.key)
            if (
                decided is not None
                and now - decided[0] < NOT_WATCHED_RECHECK
                and decided[1] == membership
            ):
                reasons[process.key] = self._reasons[process.key]  # not re-resolved
                continue
            reason = self._try_watch(process)
            if reason is None:
                changed = True
            else:
                reasons[process.key] = reason
                self._decided[process.key] = (now, membership)
        for key in [key for key in self.watched if key not in seen]:
            with self._table_lock:
                gone = self.watched.pop(key)
            self.fetcher.forget(gone.endpoints)
            self._ports.forget([key])
            if not gone.capturing:  # else the capture retires it when it ends
                self._retire(gone)
            log.info("process-gone", pid=key.pid, comm=gone.process.comm, captures=gone.captures)
            changed = True
        for watched in list(self.watched.values()):
            changed |= self._refresh_watched(watched)
        self._decided = {key: when for key, when in self._decided.items() if key in reasons}
        self._say_once(reasons)
        if changed:
            self._publish([watched.watch for watched in self.watched.values()])
        self.metrics.watched.set(len(self.watched))

    def _publish(self, watches: list[Watch]) -> None:
        """Hand the detector's new view to the loop (the detector is the loop's alone)."""
        if not self._loop_running:
            self.detector.watch(watches)
            return
        self.detector.prepare(watches)  # arming thresholds waits for the kernel: not the loop
        with self._table_lock:
            self._pending_watches = watches
        self.detector.wake()

    def _cgroup_membership(self, pid: int) -> str:
        """/proc/<pid>/cgroup: a process moved to another cgroup is looked at again."""
        try:
            return (self.config.proc_root / str(pid) / "cgroup").read_text()
        except OSError:
            return ""

    def _try_watch(self, process: procs.Process) -> str | None:
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
            threshold_bytes(limit, self.config.critical_percent),
            [],
            sampler,
            limit,
            oom_kills_at_watch=cgroup.oom_kills(resolved),
        )
        self._refresh_ports(watched)
        with self._table_lock:
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
        threshold = threshold_bytes(limit, self.config.critical_percent)
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

    def _retire(self, gone: Watched, during_capture: bool = False) -> None:
        """A process that left the table: say whether it was missed, release its files."""
        self._report_if_missed(gone, during_capture)
        gone.sampler.close()
        gone.cgroup.close()

    def _report_if_missed(self, gone: Watched, during_capture: bool) -> None:
        """Say so when a process went over its threshold, or OOM-killed, with no profile
        saved since it crossed: the operator learns the watcher saw it, and why nothing is
        there."""
        kills = cgroup.oom_kills(gone.cgroup)
        oom_killed = (
            "unknown"
            if kills is None or gone.oom_kills_at_watch is None
            else ("yes" if kills > gone.oom_kills_at_watch else "no")
        )
        crossed = gone.over_since is not None or oom_killed == "yes"
        since = gone.over_since if gone.over_since is not None else 0.0
        if not crossed or (gone.last_capture is not None and gone.last_capture >= since):
            return
        in_cooldown = (
            gone.last_capture is not None
            and time.monotonic() - gone.last_capture < self.config.cooldown
        )
        if during_capture:
            reason = "killed-during-capture"
        elif not gone.had_ports:
            reason = "no-port-yet"
        elif gone.last_attempt_failed:
            reason = "fetch-failed"
        elif in_cooldown:
            reason = "in-cooldown"
        else:
            reason = "killed-before-capture"
        self.metrics.missed.labels(reason).inc()
        log.warn(
            "capture-missed",
            pid=gone.process.pid,
            comm=gone.process.comm,
            reason=reason,
            oom_killed=oom_killed,
            watched_for=f"{time.monotonic() - gone.watched_at:.3f}s",
        )

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

    # -- capturing -------------------------------------------------------------------------

    def _capture(self, watched: Watched, trigger: Trigger) -> None:
        saved = 0
        try:
            saved = self._capture_profiles(watched, trigger)
        except Exception as error:  # a capture bug must never end the watch
            log.error("capture-crashed", pid=watched.process.pid, error=repr(error))
            self.metrics.failures.labels("crashed").inc()
        finally:
            # Stamp before clearing `capturing`, so the loop never sees neither.
            watched.last_attempt_failed = not saved
            if saved:
                watched.last_capture = time.monotonic()
                watched.captures += 1
            else:
                watched.retry_after = time.monotonic() + FAILED_RETRY
            watched.capturing = False
            self._captures.discard(threading.current_thread())
        with self._table_lock:
            gone = self.watched.get(watched.process.key) is not watched
        if gone:
            self._retire(watched, during_capture=True)
        if not saved:
            log.warn(
                "capture-failed",
                pid=watched.process.pid,
                comm=watched.process.comm,
                retry_in=f"{FAILED_RETRY:g}s",
            )

    def _capture_profiles(self, watched: Watched, trigger: Trigger) -> int:
        process = watched.process
        endpoints = watched.endpoints
        if not endpoints and self.config.pprof_ports is None:
            endpoints = ports.discover(self.config.proc_root, process.pid)
        if not endpoints:
            self.metrics.failures.labels("no-ports").inc()
            log.warn(
                "capture-skipped",
                pid=process.pid,
                comm=process.comm,
                reason="no-ports: the process listens on no TCP port",
            )
            return 0
        saved: list[Dump] = []

        def keep(result: FetchResult) -> None:
            dump = self._save(watched, trigger, result)
            if dump is not None:
                saved.append(dump)

        with self.brake.holding(watched.watch):
            first = self.fetcher.fetch_all(endpoints, gc=False, on_result=keep)
            answering = [result.endpoint for result in first if result.ok]
            if answering and procs.is_alive(self.config.proc_root, process.key):
                self.fetcher.fetch_all(answering, gc=True, on_result=keep)
        return len(saved)

    def _save(self, watched: Watched, trigger: Trigger, result: FetchResult) -> Dump | None:
        process = watched.process
        if result.data is None:
            self.metrics.failures.labels(result.reason).inc()
            log.warn(
                "fetch-failed",
                pid=process.pid,
                comm=process.comm,
                endpoint=result.endpoint,
                gc=result.gc,
                reason=result.reason,
                detail=result.detail,
                seconds=f"{result.seconds:.3f}",
            )
            return None
        sample = trigger.sample
        limit = sample.limit_bytes or 0
        metadata = {
            "pid": process.pid,
            "comm": process.comm,
            "port": result.endpoint.port,
            "endpoint": str(result.endpoint),
            "path": self.config.pprof_path + ("?gc=1" if result.gc else ""),
            "gc": result.gc,
            "usage": sample.usage_bytes,
            "raw_usage": sample.raw_usage_bytes,
            "inactive_file": sample.inactive_file_bytes,
            "limit": limit,
            "percent": round(100.0 * sample.usage_bytes / limit, 2) if limit else None,
            "threshold": self.config.critical_percent,
            "threshold_bytes": threshold_bytes(limit, self.config.critical_percent),
            "metric": self.config.memory_metric,
            "trigger": trigger.kind,
            "detect_mode": self.detector.mode,
            "cgroup": watched.cgroup.path,
            "cgroup_version": watched.cgroup.version,
            "pod": self.config.pod_name,
            "namespace": self.config.pod_namespace,
            "node": self.config.node_name,
            "timings": {
                "detected_to_fetch_start_ms": round(
                    1000 * (result.started - trigger.detected_at), 3
                ),
                "fetch_ms": round(1000 * result.seconds, 3),
                # CLOCK_MONOTONIC is system-wide: other processes on the node can compare.
                "detected_monotonic": trigger.detected_at,
                "fetch_started_monotonic": result.started,
            },
            "oomdump_version": __version__,
        }
        try:
            dump = self.spool.save(
                result.data,
                metadata,
                prefix=self.config.s3_prefix,
                namespace=self.config.pod_namespace,
                pod=self.config.pod_name,
                moment=datetime.now(UTC),
                comm=process.comm,
                pid=process.pid,
                port=result.endpoint.port,
            )
        except SpoolFull as full:
            self.metrics.failures.labels("spool-full").inc()
            log.error("dump-refused", pid=process.pid, reason="spool-full", detail=str(full))
            return None
        except OSError as error:
            self.metrics.failures.labels("spool-error").inc()
            log.error("dump-refused", pid=process.pid, reason="spool-error", detail=str(error))
            return None
        elapsed = time.monotonic() - trigger.detected_at
        self.metrics.crossing_to_dump.observe(elapsed)
        self.metrics.captures.labels("gc" if result.gc else "first").inc()
        log.info(
            "dump-saved",
            pid=process.pid,
            comm=process.comm,
            port=result.endpoint.port,
            gc=result.gc,
            path=dump.profile_path,
            bytes=len(result.data),
            percent=metadata["percent"],
            detected_to_saved_ms=round(1000 * elapsed, 1),
            fetch_ms=round(1000 * result.seconds, 1),
        )
        self.on_dump(dump)
        return dump
