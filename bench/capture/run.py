"""Race the OOM killer: capture rate, detection latency, time to disk and completeness.

    sudo .venv/bin/python bench/capture/run.py [--runs 20] [--modes events,adaptive,...]

For each detection mode one real watcher runs (`python -m sidecar`, PROC_ROOT=/proc,
DUMP_DIR in a temp dir); for each leak shape, `--runs` times: a Go leaker
(bench/capture/leaker) starts in a fresh cgroup v1 group limited to 256 MiB, the bench
waits until the watcher has opened its connection to the leaker's pprof port, then, at a
random point of the next second (so that a poll meets the leak at a random phase), lets
it leak until the kernel OOM-kills it. The true crossing of CRITICAL% by the metric the
watcher uses (MEMORY_METRIC; see Crossing) is taken from an eventfd threshold the bench
arms itself on raw usage, then for the working set a 1 ms poll; the detection latency two
ways: to the watcher's
fetch start (`timings.fetch_started_monotonic` in the dump's metadata; CLOCK_MONOTONIC is
system-wide) and to the request's arrival as the leaker stamps it; the time on disk from
the profile file's mtime; completeness is the profile's in-use bytes over the cgroup usage
the watcher sampled. Then the watcher's
overhead: CPU and RSS while it watches 20 idle leakers at WATCH_TIME=100ms.

`--page-cache-mib N` first writes an N MiB file from inside each leaker's group, so the
group holds page cache as a real service does and raw usage crosses before the working set.
"""

import argparse
import json
import os
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(Path(__file__).parent)]

from inuse import inuse_bytes  # noqa: E402

from testinfra.cgroups import MemoryCgroup, MiB, cgroup_v1_unavailable, memory_cgroup  # noqa: E402
from testinfra.gobuild import build_local  # noqa: E402
from testinfra.watcher_process import Lines, PodView, WatcherProcess  # noqa: E402

PHASES = random.Random(6)  # seeded: the same start phases in every run of the bench
LIMIT = 256 * MiB
CRITICAL = 70
THRESHOLD = LIMIT * CRITICAL // 100
SHAPES = {
    "gradual": ["-shape", "gradual", "-rate", "64"],
    "doubling": ["-shape", "doubling", "-start", "4", "-period", "300ms"],
    "burst": ["-shape", "burst"],
    # Start-up OOMs: the process serves pprof at once and bursts on its own soon after it
    # starts; the watcher is already running, as in a pod whose app container (re)starts.
    "startup-300ms": ["-shape", "burst", "-after", "300ms"],
    "startup-1s": ["-shape", "burst", "-after", "1s"],
    # The same cgroup, the process started again after each kill (CrashLoopBackOff
    # without the back-off): RESTART_LIVES lives per run, each a row entry of its own.
    "restart-loop": ["-shape", "burst", "-after", "1s"],
}
STARTUP_SHAPES = ("startup-300ms", "startup-1s", "restart-loop")
RESTART_LIVES = 5
MODES = {  # name -> watcher environment
    "events": {"DETECT_MODE": "events", "WATCH_TIME": "100ms"},
    "adaptive": {"DETECT_MODE": "adaptive", "WATCH_TIME": "100ms"},
    "poll-100ms": {"DETECT_MODE": "poll", "WATCH_TIME": "100ms"},
    "poll-1s": {"DETECT_MODE": "poll", "WATCH_TIME": "1s"},
    # Not run by default: events on raw usage. Each mode's latencies start at the crossing
    # of the metric its watcher uses (working_set by default: see Crossing).
    "events-usage": {"DETECT_MODE": "events", "WATCH_TIME": "100ms", "MEMORY_METRIC": "usage"},
    # Not run by default: EMERGENCY_BRAKE=true is opt-in and changes the app's limits.
    "events-brake": {"DETECT_MODE": "events", "WATCH_TIME": "100ms", "EMERGENCY_BRAKE": "true"},
}
DEFAULT_MODES = ("events", "adaptive", "poll-100ms", "poll-1s")


def metric_of(mode: str) -> str:
    return MODES[mode].get("MEMORY_METRIC", "working_set")


def start_watcher(env: dict[str, str], dump_dir: Path, view: PodView) -> WatcherProcess:
    """`python -m sidecar` in one detection mode, logging to a reader."""
    return WatcherProcess(
        {
            **env,
            "CRITICAL": str(CRITICAL),
            "COOLDOWN": "30s",
            "DUMP_DIR": str(dump_dir),
            "PROC_ROOT": view.proc_root,
        }
    )


def working_set(usage_fd: int, stat_fd: int) -> int:
    """usage_in_bytes - total_inactive_file, as the watcher's MEMORY_METRIC=working_set."""
    usage = int(os.pread(usage_fd, 64, 0))
    for line in os.pread(stat_fd, 65536, 0).splitlines():
        if line.startswith(b"total_inactive_file "):
            return usage - int(line.split()[1])
    return usage


class Crossing:
    """The moment the watcher's metric first crosses THRESHOLD.

    Raw usage: an eventfd threshold of our own on memory.usage_in_bytes. The working set
    (usage - inactive_file) has no kernel event, and cannot cross before raw usage does:
    after the eventfd fires, usage and memory.stat are polled every POLL seconds (for at
    most POLL_FOR) and the crossing is stamped at the last poll that still saw it below
    (the raw crossing when none did), so the latency is overstated by at most one poll,
    never understated."""

    POLL = 0.001
    POLL_FOR = 10.0

    def __init__(self, group: MemoryCgroup, metric: str) -> None:
        self.metric = metric
        self.raw_at_ns: int | None = None  # wall clock, as the leaker stamps requests
        self.raw_at_monotonic_ns: int | None = None  # as the watcher stamps its fetch start
        self.at_ns: int | None = None  # the watcher's metric: same clocks
        self.at_monotonic_ns: int | None = None
        self.polls = 0
        self._closing = False
        self._eventfd = os.eventfd(0, os.EFD_CLOEXEC)
        self._usage = os.open(group.path / "memory.usage_in_bytes", os.O_RDONLY)
        self._stat = os.open(group.path / "memory.stat", os.O_RDONLY)
        (group.path / "cgroup.event_control").write_text(
            f"{self._eventfd} {self._usage} {THRESHOLD}"
        )
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        # Real-time priority, so this reference wakes first on a busy 2-core machine.
        with suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
        select.select([self._eventfd], [], [], 120)
        if self._closing:
            return
        self.raw_at_monotonic_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        self.raw_at_ns = time.time_ns()
        if self.metric != "working_set":
            self.at_monotonic_ns, self.at_ns = self.raw_at_monotonic_ns, self.raw_at_ns
            return
        below = (self.raw_at_monotonic_ns, self.raw_at_ns)  # last moment known not over
        end = self.raw_at_monotonic_ns + round(self.POLL_FOR * 1e9)
        while not self._closing and time.clock_gettime_ns(time.CLOCK_MONOTONIC) < end:
            stamp = (time.clock_gettime_ns(time.CLOCK_MONOTONIC), time.time_ns())
            try:
                over = working_set(self._usage, self._stat) >= THRESHOLD
            except (OSError, ValueError):
                return
            self.polls += 1
            if over:
                self.at_monotonic_ns, self.at_ns = below
                return
            below = stamp
            time.sleep(self.POLL)

    def close(self) -> None:
        self._closing = True
        with suppress(OSError):
            os.eventfd_write(self._eventfd, 1)  # ends the thread if it never fired
        self._thread.join(5)
        os.close(self._eventfd)
        os.close(self._usage)
        os.close(self._stat)


@dataclass
class Run:
    shape: str
    mode: str
    pid: int = 0
    discovered: bool = False
    oom_killed: bool = False
    metric: str = "working_set"  # the watcher's MEMORY_METRIC, whose crossing counts
    crossed_ns: int | None = None
    crossed_monotonic_ns: int | None = None
    raw_crossed_monotonic_ns: int | None = None  # raw usage's crossing (the eventfd)
    crossing_polls: int = 0
    fetch_start_ns: int | None = None  # the request's arrival in the leaker (wall clock)
    watcher_fetch_start_monotonic_ns: int | None = None  # from the dump's metadata
    first_on_disk_ns: int | None = None
    captured: bool = False
    captured_gc: bool = False
    trigger: str = ""
    detected_to_fetch_ms: float | None = None  # the watcher's own figure (metadata timings)
    usage: int | None = None
    inuse_first: int | None = None
    inuse_gc: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def latency_ms(self) -> float | None:
        """Crossing -> the first request's arrival in the Go process."""
        if self.crossed_ns is None or self.fetch_start_ns is None:
            return None
        return (self.fetch_start_ns - self.crossed_ns) / 1e6

    @property
    def to_fetch_start_ms(self) -> float | None:
        """Crossing -> the watcher's fetch start (both CLOCK_MONOTONIC, system-wide)."""
        if self.crossed_monotonic_ns is None or self.watcher_fetch_start_monotonic_ns is None:
            return None
        return (self.watcher_fetch_start_monotonic_ns - self.crossed_monotonic_ns) / 1e6

    @property
    def raw_to_fetch_start_ms(self) -> float | None:
        """Raw usage's crossing -> the watcher's fetch start."""
        if self.raw_crossed_monotonic_ns is None or self.watcher_fetch_start_monotonic_ns is None:
            return None
        return (self.watcher_fetch_start_monotonic_ns - self.raw_crossed_monotonic_ns) / 1e6

    @property
    def to_disk_ms(self) -> float | None:
        if self.crossed_ns is None or self.first_on_disk_ns is None:
            return None
        return (self.first_on_disk_ns - self.crossed_ns) / 1e6


def one_run(
    leaker: Path,
    shape: str,
    mode: str,
    watcher: WatcherProcess,
    dump_dir: Path,
    view: PodView,
    page_cache_mib: int = 0,
    group: MemoryCgroup | None = None,
) -> Run:
    """One leak in a fresh group (or in `group`, for the restart loop)."""
    with ExitStack() as stack:
        if group is None:
            group = stack.enter_context(memory_cgroup(LIMIT, prefix="oomdump-bench"))
        if shape in STARTUP_SHAPES:
            return startup_run(leaker, shape, mode, watcher, dump_dir, view, group)
        return signalled_run(leaker, shape, mode, watcher, dump_dir, view, page_cache_mib, group)
    raise AssertionError("unreachable")


def startup_run(
    leaker: Path,
    shape: str,
    mode: str,
    watcher: WatcherProcess,
    dump_dir: Path,
    view: PodView,
    group: MemoryCgroup,
) -> Run:
    """The process appears in the pod and leaks on its own: discovery is part of the race."""
    run = Run(shape, mode, metric=metric_of(mode), discovered=True)
    log_from = len(watcher.log.lines)
    kills_before = group.oom_kills()
    crossing = Crossing(group, run.metric)
    app = group.spawn([str(leaker), *SHAPES[shape]], stdout=subprocess.PIPE, text=True, bufsize=1)
    view.add(app.pid)  # a pod's /proc shows a new process at once
    out = Lines(app.stdout)
    run.pid = app.pid
    try:
        try:
            app.wait(120)
        except subprocess.TimeoutExpired:
            run.notes.append("leaker not killed within 120s")
    finally:
        crossing.close()
        with suppress(ProcessLookupError):
            os.killpg(app.pid, signal.SIGKILL)
        app.wait()
        view.remove(app.pid)
    run.crossed_ns = crossing.at_ns
    run.crossed_monotonic_ns = crossing.at_monotonic_ns
    run.raw_crossed_monotonic_ns = crossing.raw_at_monotonic_ns
    run.crossing_polls = crossing.polls
    run.oom_killed = group.oom_kills() > kills_before
    finish(run, watcher, out, dump_dir, log_from)
    return run


def signalled_run(
    leaker: Path,
    shape: str,
    mode: str,
    watcher: WatcherProcess,
    dump_dir: Path,
    view: PodView,
    page_cache_mib: int,
    group: MemoryCgroup,
) -> Run:
    """The leak starts (SIGUSR1) only once the watcher has connected to the process."""
    run = Run(shape, mode, metric=metric_of(mode))
    log_from = len(watcher.log.lines)
    with tempfile.TemporaryDirectory(prefix="oomdump-bench-cache-", dir="/var/tmp") as cache:
        if page_cache_mib:  # as a real service's files: usage crosses before the working set
            group.charge_page_cache(Path(cache), page_cache_mib)
        app = group.spawn(
            [str(leaker), *SHAPES[shape]], stdout=subprocess.PIPE, text=True, bufsize=1
        )
        out = Lines(app.stdout)
        try:
            run.pid = app.pid
            if out.wait_for(lambda line: line.startswith("listening"), 10) is None:
                run.notes.append("leaker did not start")
                return run
            view.add(app.pid)
            # The watcher opens its connection when it starts watching the process.
            run.discovered = out.wait_for(lambda line: line.startswith("conn"), 10) is not None
            if not run.discovered:
                run.notes.append("watcher never connected")
                return run
            watched = watcher.log.wait_for(
                lambda line: "event=watching" in line and f"pid={app.pid} " in line, 5
            )
            if watched is None:
                run.notes.append("watcher never logged watching")
            crossing = Crossing(group, run.metric)
            try:
                # The watcher connects right after its table refresh, so a leak started at
                # once would meet a poll at the same phase every run: start it at a random
                # point of one second (the longest poll) instead.
                time.sleep(PHASES.uniform(0.0, 1.0))
                os.kill(app.pid, signal.SIGUSR1)
                try:
                    app.wait(120)
                except subprocess.TimeoutExpired:
                    run.notes.append("leaker not killed within 120s")
            finally:
                crossing.close()
            run.crossed_ns = crossing.at_ns
            run.crossed_monotonic_ns = crossing.at_monotonic_ns
            run.raw_crossed_monotonic_ns = crossing.raw_at_monotonic_ns
            run.crossing_polls = crossing.polls
            if crossing.raw_at_ns is not None and crossing.at_ns is None:
                run.notes.append(f"{run.metric} never crossed before the kill")
            run.oom_killed = group.oom_kills() > 0
        finally:
            with suppress(ProcessLookupError):
                os.killpg(app.pid, signal.SIGKILL)
            app.wait()
            view.remove(app.pid)
    finish(run, watcher, out, dump_dir, log_from)
    return run


def finish(run: Run, watcher: WatcherProcess, out: Lines, dump_dir: Path, log_from: int) -> None:
    # The watcher drops a process on its next look; its captures end before.
    watcher.log.wait_for(lambda line: "event=process-gone" in line and f"pid={run.pid} " in line, 5)
    requests = [line.split() for line in out.lines if line.startswith("request ")]
    first_fetch = [int(r[1]) for r in requests if "gc=1" not in r[2] and "heap" in r[2]]
    run.fetch_start_ns = min(first_fetch) if first_fetch else None
    collect_dumps(run, dump_dir)
    if not run.captured:  # what the watcher said meanwhile, for the raw results
        run.notes += watcher.log.lines[log_from:]


def collect_dumps(run: Run, dump_dir: Path) -> None:
    for metadata_path in sorted(dump_dir.rglob(f"*-{run.pid}-*.json")):
        if metadata_path.name.startswith(".tmp-"):
            continue  # the watcher rewriting it (the culprit is added after the race)
        try:
            metadata = json.loads(metadata_path.read_text())
        except FileNotFoundError:
            continue
        if metadata.get("pid") != run.pid:
            continue
        profile = Path(str(metadata_path)[: -len(".json")] + ".pb.gz")
        if not profile.exists():
            continue
        data = profile.read_bytes()
        inuse = inuse_bytes(data)
        if metadata.get("gc"):
            run.captured_gc = True
            run.inuse_gc = inuse
        else:
            run.captured = True
            run.inuse_first = inuse
            run.first_on_disk_ns = profile.stat().st_mtime_ns
            run.trigger = metadata.get("trigger", "")
            timings = metadata.get("timings", {})
            run.detected_to_fetch_ms = timings.get("detected_to_fetch_start_ms")
            started = timings.get("fetch_started_monotonic")
            if started is not None:
                run.watcher_fetch_start_monotonic_ns = round(started * 1e9)
            run.usage = metadata.get("usage")
        profile.unlink()
        metadata_path.unlink()


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summarize(runs: list[Run], shape: str, mode: str) -> dict[str, object]:
    mine = [r for r in runs if r.shape == shape and r.mode == mode and r.discovered]
    latencies = [r.latency_ms for r in mine if r.latency_ms is not None]
    to_fetch = [r.to_fetch_start_ms for r in mine if r.to_fetch_start_ms is not None]
    raw_to_fetch = [r.raw_to_fetch_start_ms for r in mine if r.raw_to_fetch_start_ms is not None]
    to_disk = [r.to_disk_ms for r in mine if r.to_disk_ms is not None]
    first = [r.inuse_first / r.usage for r in mine if r.inuse_first and r.usage]
    gc = [r.inuse_gc / r.usage for r in mine if r.inuse_gc and r.usage]
    return {
        "shape": shape,
        "mode": mode,
        "runs": len(mine),
        "oom_killed": sum(r.oom_killed for r in mine),
        "captured": sum(r.captured for r in mine),
        "captured_gc": sum(r.captured_gc for r in mine),
        "by_event": sum(r.trigger == "event" for r in mine),
        "fetch_start_p50_ms": percentile(to_fetch, 0.5),
        "fetch_start_p99_ms": percentile(to_fetch, 0.99),
        "raw_fetch_start_p50_ms": percentile(raw_to_fetch, 0.5),
        "raw_fetch_start_p99_ms": percentile(raw_to_fetch, 0.99),
        "metric": metric_of(mode),
        "metric_crossed": sum(r.crossed_monotonic_ns is not None for r in mine),
        "latency_p50_ms": percentile(latencies, 0.5),
        "latency_p99_ms": percentile(latencies, 0.99),
        "disk_p50_ms": percentile(to_disk, 0.5),
        "disk_p99_ms": percentile(to_disk, 0.99),
        "complete_first_p50": statistics.median(first) if first else None,
        "complete_gc_p50": statistics.median(gc) if gc else None,
    }


def print_table(rows: list[dict[str, object]]) -> None:
    header = (
        "| shape | mode | captured | ?gc=1 too | by event "
        "| metric crossing to fetch start p50 / p99 ms "
        "| crossing to request in app p50 / p99 ms "
        "| on disk p50 / p99 ms | complete first / gc=1 "
        "| raw usage crossing to fetch start p50 / p99 ms |"
    )
    print(header)
    print("|" + "---|" * 10)
    for row in rows:
        runs = row["runs"] or 1
        print(
            f"| {row['shape']} | {row['mode']} "
            f"| {row['captured']}/{row['runs']} ({100 * row['captured'] / runs:.0f}%) "
            f"| {row['captured_gc']}/{row['runs']} | {row['by_event']} "
            f"| {fmt(row['fetch_start_p50_ms'])} / {fmt(row['fetch_start_p99_ms'])} "
            f"| {fmt(row['latency_p50_ms'])} / {fmt(row['latency_p99_ms'])} "
            f"| {fmt(row['disk_p50_ms'])} / {fmt(row['disk_p99_ms'])} "
            f"| {fmt(row['complete_first_p50'], 2)} / {fmt(row['complete_gc_p50'], 2)} "
            f"| {fmt(row['raw_fetch_start_p50_ms'])} / {fmt(row['raw_fetch_start_p99_ms'])} |",
            flush=True,
        )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def overhead(
    leaker: Path, mode: str, seconds: float, processes: int, pod_view: bool, settle: float = 0.0
) -> dict[str, object]:
    """CPU (% of one core) and RSS of the watcher watching idle leakers, measured `settle`
    seconds after they were all watched (a young process's ports are looked for every
    WATCH_TIME for its first 30 s, an older one's every REFRESH_INTERVAL)."""
    with (
        tempfile.TemporaryDirectory(prefix="oomdump-bench-") as dump,
        tempfile.TemporaryDirectory(prefix="oomdump-bench-proc-") as proc,
        ExitStack() as stack,
    ):
        view = PodView(Path(proc) if pod_view else None)
        watcher = start_watcher(MODES[mode], Path(dump), view)
        stack.callback(watcher.stop)
        outs = []
        for _ in range(processes):
            group = stack.enter_context(memory_cgroup(LIMIT, prefix="oomdump-bench"))
            app = group.spawn([str(leaker), "-shape", "burst"], stdout=subprocess.PIPE, text=True)
            stack.callback(app.wait)
            stack.callback(lambda pid=app.pid: os.killpg(pid, signal.SIGKILL))
            outs.append(Lines(app.stdout))
            if outs[-1].wait_for(lambda line: line.startswith("listening"), 10):
                view.add(app.pid)
        connected = sum(
            o.wait_for(lambda line: line.startswith("conn"), 15) is not None for o in outs
        )
        time.sleep(settle)
        start_cpu, start = cpu_seconds(watcher.process.pid), time.monotonic()
        time.sleep(seconds)
        cpu = cpu_seconds(watcher.process.pid) - start_cpu
        elapsed = time.monotonic() - start
        return {
            "mode": mode,
            "view": "pod" if pod_view else "host",
            "processes": processes,
            "connected": connected,
            "settle": settle,
            "seconds": round(elapsed, 1),
            "cpu_percent_of_one_core": round(100 * cpu / elapsed, 2),
            "rss_mib": round(rss_mib(watcher.process.pid), 1),
            "peak_rss_mib": round(rss_mib(watcher.process.pid, "VmHWM"), 1),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per shape and mode")
    parser.add_argument(
        "--modes", default=",".join(DEFAULT_MODES), help="comma list of " + ",".join(MODES)
    )
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma list")
    parser.add_argument("--overhead-seconds", type=float, default=20.0)
    parser.add_argument("--overhead-modes", default="events,adaptive,poll-100ms")
    parser.add_argument(
        "--overhead-settle",
        type=float,
        default=35.0,
        help="also measure this long after the processes were watched (their ports are "
        "looked for every WATCH_TIME in their first 30 s)",
    )
    parser.add_argument(
        "--view",
        choices=("pod", "host"),
        default="pod",
        help="pod: the watcher's PROC_ROOT shows only the leakers (as in a pod); host: /proc",
    )
    parser.add_argument(
        "--page-cache-mib",
        type=int,
        default=0,
        help="charge this much page cache to each leaker's group first (a file written there)",
    )
    parser.add_argument("--out", default="/tmp/oomdump-bench-capture.json", help="raw results")
    args = parser.parse_args()
    reason = cgroup_v1_unavailable()
    if reason is not None:
        print(f"bench-capture needs real cgroup v1 memory limits: {reason}", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    shapes = [s for s in args.shapes.split(",") if s]
    for name in modes + args.overhead_modes.split(","):
        if name and name not in MODES:
            print(f"unknown mode {name!r}: choose from {', '.join(MODES)}", file=sys.stderr)
            return 2
    leaker = build_local("leaker", Path(__file__).parent / "leaker")
    began = time.monotonic()
    runs: list[Run] = []
    rows: list[dict[str, object]] = []
    for mode in modes:
        dump_dir = Path(tempfile.mkdtemp(prefix="oomdump-bench-"))
        proc_dir = Path(tempfile.mkdtemp(prefix="oomdump-bench-proc-"))
        view = PodView(proc_dir if args.view == "pod" else None)
        watcher = start_watcher(MODES[mode], dump_dir, view)
        try:
            for shape in shapes:
                if shape == "restart-loop":
                    for _ in range(max(1, args.runs // RESTART_LIVES)):
                        with memory_cgroup(LIMIT, prefix="oomdump-bench") as group:
                            for _ in range(RESTART_LIVES):
                                runs.append(
                                    one_run(leaker, shape, mode, watcher, dump_dir, view, 0, group)
                                )
                else:
                    for _ in range(args.runs):
                        runs.append(
                            one_run(
                                leaker, shape, mode, watcher, dump_dir, view, args.page_cache_mib
                            )
                        )
                rows.append(summarize(runs, shape, mode))
                print(f"# {mode} {shape} done at {time.monotonic() - began:.0f}s", flush=True)
        finally:
            watcher.stop()
            shutil.rmtree(dump_dir, ignore_errors=True)
            shutil.rmtree(proc_dir, ignore_errors=True)
    costs = []
    for mode in [m for m in args.overhead_modes.split(",") if m]:
        for settle in (0.0, args.overhead_settle):  # young processes, then settled ones
            costs.append(overhead(leaker, mode, args.overhead_seconds, 20, True, settle))
    if args.overhead_seconds > 0 and "events" in args.overhead_modes.split(","):
        costs.append(
            overhead(leaker, "events", args.overhead_seconds, 20, False, args.overhead_settle)
        )
    print(
        f"\ncapture under a {LIMIT // MiB} MiB limit, CRITICAL={CRITICAL}%, {args.view} view, "
        f"{args.page_cache_mib} MiB page cache "
        f"({args.runs} runs per row, {time.monotonic() - began:.0f}s):\n"
    )
    print_table(
        sorted(rows, key=lambda r: (list(SHAPES).index(r["shape"]), modes.index(r["mode"])))
    )
    print("\nwatcher overhead, 20 idle processes, WATCH_TIME=100ms:\n")
    print(
        "| mode | PROC_ROOT view | measured from | connected | CPU % of one core "
        "| RSS MiB | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for cost in costs:
        print(
            f"| {cost['mode']} | {cost['view']} | {cost['settle']:g} s after watched "
            f"| {cost['connected']}/{cost['processes']} "
            f"| {cost['cpu_percent_of_one_core']} | {cost['rss_mib']} | {cost['peak_rss_mib']} |"
        )
    Path(args.out).write_text(
        json.dumps(
            {
                "rows": rows,
                "overhead": costs,
                "runs": [
                    {
                        **asdict(r),
                        "latency_ms": r.latency_ms,
                        "to_fetch_start_ms": r.to_fetch_start_ms,
                        "raw_to_fetch_start_ms": r.raw_to_fetch_start_ms,
                        "to_disk_ms": r.to_disk_ms,
                    }
                    for r in runs
                ],
            },
            indent=1,
        )
    )
    print(f"\nraw results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
