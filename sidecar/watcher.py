"""The watch loop: one pass reads top to bottom.

    take the latest process table from the refresher, if it changed
    sample the processes whose event fired first, then the others the detector says are due
    capture each process at or over CRITICAL% whose cooldown has passed (on a thread)
    wait for the detector (a poll interval, or an event)

The process table (`sidecar.table`) is kept on a thread of its own, so the loop's reaction
to an event never waits for it: every WATCH_TIME a cheap look (the PID list, fd counts),
and a full refresh at once when a PID is new, so a process is watched, its threshold armed
and its ports known within WATCH_TIME of its start; OOMs at start-up are raced like any
other. The full refresh also runs every `refresh_interval`.

A capture never blocks the loop or another process's watch: each runs on a thread of its
own (at most one per process at a time), so a hanging port delays nothing else. The
cooldown is stamped after a capture that saved at least one profile; a capture that saved
nothing is retried after FAILED_RETRY while the process stays over the threshold. Its
dumps are then read for their culprit (`culprit.Reader`: one at a time, on a thread of its
own), so a profile that is costly to read holds up neither the loop nor another capture.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sidecar import cgroup, culprit, log, ports, procs, verdicts
from sidecar.brake import Brake
from sidecar.config import Config
from sidecar.detection.watch import Detector, Watch
from sidecar.fetch import FetchResult, PprofFetcher
from sidecar.metrics import Metrics
from sidecar.notify import CAPTURED, FAILED, Notice
from sidecar.spool import Dump, Spool, SpoolFull
from sidecar.table import ProcessTable, Watched, notice_of

FAILED_RETRY = 1.0  # seconds between capture attempts that saved nothing
# Captures in flight at once (each a thread with up to ports.MAX_ENDPOINTS fetches): an app
# that forks thousands of processes over the threshold cannot make thousands of threads.
MAX_CAPTURES = 8
# At shutdown, dumps still waiting to be read are read for this long; the rest are handed
# to the uploader unread (it uploads what is left on the next start).
FINISH_READING = 2.0


@dataclass(frozen=True)
class Trigger:
    sample: cgroup.MemorySample
    detected_at: float  # monotonic time of the sample that found the process over
    kind: str  # "event" (the detector fired) or "sample" (the poll saw it)


@dataclass
class Watcher:
    config: Config
    detector: Detector
    brake: Brake
    spool: Spool
    fetcher: PprofFetcher
    metrics: Metrics
    on_dump: Callable[[Dump], None] = lambda dump: None
    notify: Callable[[Notice], None] = lambda notice: None  # Events on the pod
    select: Callable[[procs.Process], bool] = lambda process: True  # tests narrow the host
    refresh_interval: float = 1.0

    def __post_init__(self) -> None:
        self.refresh_interval = max(self.refresh_interval, self.config.watch_time)
        self.table = ProcessTable(
            self.config, self.fetcher, self.metrics, self.select, self._publish, self.notify
        )
        self._captures: set[threading.Thread] = set()
        self.reader = culprit.Reader()
        self._pending_watches: list[Watch] | None = None  # guarded by the table's lock
        self._loop_running = False
        self._refresh_wanted = threading.Event()
        self.detector.wakeups.count_in(self.metrics.detector_wakeups)

    @property
    def watched(self) -> dict[procs.ProcessKey, Watched]:
        return self.table.watched

    def refresh(self) -> None:
        """A full pass of the process table (the refresher's; tests call it directly)."""
        self.table.refresh()

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
                with self.table.lock:
                    pending, self._pending_watches = self._pending_watches, None
                    snapshot = list(self.watched.values())
                if pending is not None:
                    self.detector.watch(pending)
                if fired:  # the processes that just fired first: they are racing a kill
                    snapshot.sort(key=lambda watched: watched.process.key not in fired)
                now = time.monotonic()
                for watched in snapshot:
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
            self.reader.finish(read_until=time.monotonic() + FINISH_READING)
            for watched in self.watched.values():
                if not watched.capturing:  # a capture still running keeps its files
                    watched.sampler.close()
                    watched.cgroup.close()
            log.info("watch-stop", watched=len(self.watched))

    def _refresh_until(self, stop: threading.Event) -> None:
        full_due = 0.0
        while not stop.is_set():
            try:
                if (
                    time.monotonic() >= full_due
                    or self._refresh_wanted.is_set()
                    or self.table.look()
                ):
                    self._refresh_wanted.clear()
                    self.refresh()
                    full_due = time.monotonic() + self.refresh_interval
            except Exception as error:  # keep watching what we know
                log.error("refresh-failed", error=repr(error))
            self._refresh_wanted.wait(self.config.watch_time)

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
        watched.last_usage = sample.usage_bytes
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

    def _publish(self, watches: list[Watch]) -> None:
        """Hand the detector's new view to the loop (the detector is the loop's alone)."""
        if not self._loop_running:
            self.detector.watch(watches)
            return
        self.detector.prepare(watches)  # arming thresholds waits for the kernel: not the loop
        with self.table.lock:
            self._pending_watches = watches
        self.detector.wake()

    # -- capturing -------------------------------------------------------------------------

    def _capture(self, watched: Watched, trigger: Trigger) -> None:
        saved = 0
        failures: list[str] = []
        # The name as of now: a process found within WATCH_TIME of its start may have been
        # a launcher (`sh -c 'exec app'`) then; exec keeps pid and start time.
        stat = procs.read_stat(self.config.proc_root, watched.process.pid)
        if stat is not None and stat.starttime == watched.process.key.starttime:
            watched.process = procs.Process(watched.process.key, stat.comm)
        try:
            saved = self._capture_profiles(watched, trigger, failures)
        except Exception as error:  # a capture bug must never end the watch
            log.error("capture-crashed", pid=watched.process.pid, error=repr(error))
            self.metrics.failures.labels("crashed").inc()
            failures.append("crashed")
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
        with self.table.lock:
            gone = self.watched.get(watched.process.key) is not watched
        if gone:
            self.table.retire(watched, during_capture=True)
        if not saved:
            log.warn(
                "capture-failed",
                pid=watched.process.pid,
                comm=watched.process.comm,
                reasons=",".join(failures),
                retry_in=f"{FAILED_RETRY:g}s",
            )
            if watched.failure_told != watched.over_since:  # once per crossing
                watched.failure_told = watched.over_since
                self.notify(notice_of(watched, trigger.sample, FAILED, "", ",".join(failures)))

    def _capture_profiles(self, watched: Watched, trigger: Trigger, failures: list[str]) -> int:
        """Fetch and save, then (the race over) give the dumps to the reader, which names
        their culprit, hands them to the uploader and tells; the number of dumps saved."""
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
            failures.append("no-ports")
            return 0
        saved: list[tuple[Dump, FetchResult]] = []

        def keep(result: FetchResult) -> None:
            dump = self._save(watched, trigger, result)
            if dump is not None:
                saved.append((dump, result))
            else:
                failures.append(result.reason if result.data is None else "spool")

        with self.brake.holding(watched.watch):
            first = self.fetcher.fetch_all(endpoints, gc=False, on_result=keep)
            answering = [result.endpoint for result in first if result.ok]
            if answering and procs.is_alive(self.config.proc_root, process.key):
                self.fetcher.fetch_all(answering, gc=True, on_result=keep)
        if saved:
            # The complete ?gc=1 dump first; the reader opens the files (the bytes go now).
            dumps = sorted(((dump, result.gc) for dump, result in saved), key=lambda d: not d[1])
            self.reader.submit(
                lambda: self._after_race(watched, trigger, dumps),
                lambda reason: self._after_race(watched, trigger, dumps, unread=reason),
            )
        return len(saved)

    def _after_race(
        self,
        watched: Watched,
        trigger: Trigger,
        dumps: list[tuple[Dump, bool]],
        unread: str | None = None,
    ) -> None:
        """On the reader's thread: name the culprit of each dump (`unread`: why not) and what
        grew since this process's previous capture, then upload and tell."""
        best: tuple[dict[str, Any], ...] = ()
        for index, (dump, gc) in enumerate(dumps):
            started = time.monotonic()
            if unread is None:
                reading = culprit.read_file(dump.profile_path)
            else:
                reading = culprit.Reading([], unread, None)
            notes: dict[str, Any] = {"top": reading.top}
            if reading.error is not None:
                notes = {"top_error": reading.error}
            elif index == 0 and reading.heap is not None:
                if watched.last_heap is not None:
                    notes["growth"] = culprit.growth(watched.last_heap, reading.heap)
                    notes["growth_since"] = watched.last_heap_key
                watched.last_heap, watched.last_heap_key = reading.heap, dump.key
            if unread is None:  # CLOCK_MONOTONIC, as the fetch's timings: what ran beside
                seconds = round(time.monotonic() - started, 6)
                notes["top_read"] = {"started_monotonic": started, "seconds": seconds}
            try:
                self.spool.annotate(dump, notes)
            except (OSError, ValueError) as failure:
                log.warn("dump-annotate-failed", path=dump.metadata_path, reason=str(failure))
            log.info(
                "dump-top",
                pid=watched.process.pid,
                comm=watched.process.comm,
                gc=gc,
                path=dump.profile_path,
                top=culprit.describe(reading.top) if reading.error is None else None,
                unreadable=reading.error,
                grew=culprit.describe_growth(notes.get("growth", [])) or None,
            )
            best = best or tuple(reading.top)
            self.on_dump(dump)
        self.metrics.culprits.name(watched.process.comm, best)
        location = str(dumps[0][0].profile_path)
        self.notify(notice_of(watched, trigger.sample, CAPTURED, location, "", best))

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
        capture = verdicts.Capture(
            process.pid,
            process.comm,
            str(result.endpoint),
            result.endpoint.port,
            result.gc,
            trigger.sample,
            trigger.kind,
            trigger.detected_at,
            result.started,
            result.seconds,
            watched.cgroup.path,
            watched.cgroup.version,
        )
        metadata = verdicts.dump_metadata(
            capture,
            pprof_path=self.config.pprof_path,
            critical_percent=self.config.critical_percent,
            metric=self.config.memory_metric,
            detect_mode=self.detector.mode,
            pod=self.config.pod_name,
            namespace=self.config.pod_namespace,
            node=self.config.node_name,
        )
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
        return dump
