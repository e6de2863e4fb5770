"""The next capture's crossing-to-fetch latency while the watcher reads another process's
large heap profile, against the same latency with nothing being read.

    sudo .venv/bin/python bench/decode_beside_capture.py [--rounds 10] [--case deadline]
        [--each] [--cpu-limit 200]

Two apps (testinfra/profile_server.py), each in a cgroup v1 memory group of its own
(128 MiB, CRITICAL 70%), watched by the real watcher (`python -m sidecar`: v1 threshold
events, each app's own port). `heavy` serves a profile that is costly to read; `next` a
small one. In a round `beside`, heavy crosses its threshold, and the moment its complete
(?gc=1) profile is saved, which is when the watcher starts reading it, next crosses; in a
round `alone` next crosses with nothing being read. Rounds alternate, so both kinds see the
same load on the machine. Each round gives next's

    crossing->fetch  from the app's crossing to its fetch: the app holds memory up to 1 MiB
                     below the threshold, notes the time, then takes 4 MiB more (a few
                     milliseconds: the figure is an upper bound by that much);
                     CLOCK_MONOTONIC is system-wide, so that time and the watcher's fetch
                     start (in the dump's .json) compare
    detected->fetch  from the watcher's sample that found it over to its fetch (.json)

and, beside, how long each of heavy's reads took and whether next was detected while heavy
was being read (`top_read` in heavy's .json). `--cpu-limit 200` runs the watcher under a
CFS quota of 200 millicores (a cgroup v1 cpu group), as the chart's limits.cpu does.

Heavy's profiles: `20 MiB Go-shaped` (Go's layout, 20 MiB inflated: the reader refuses it at
its 8 MiB cap) and `deadline` (450 thousand tiny samples, 3.4 MiB inflated: the reader runs
into its 0.5 s deadline). Both of heavy's dumps (first and ?gc=1) are read.
"""

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from profile_read import synthetic  # noqa: E402

from sidecar.verdicts import threshold_bytes  # noqa: E402
from testinfra.cgroups import MiB, cgroup_v1_unavailable, memory_cgroup  # noqa: E402
from testinfra.costly_profiles import deadline_profile, small_profile  # noqa: E402
from testinfra.profile_server import ProfileApp  # noqa: E402
from testinfra.watcher_process import Lines, PodView, WatcherProcess  # noqa: E402

LIMIT = 128 * MiB
CPU_ROOT = Path("/sys/fs/cgroup/cpu")
THRESHOLD = threshold_bytes(LIMIT, 70)
COOLDOWN = 1.0


def go_shaped_20_mib() -> bytes:
    data = synthetic(samples=245_000, depth=24, locations=60_000, functions=20_000)
    assert len(gzip.decompress(data)) >= 20 * MiB
    return data


@contextmanager
def cpu_limited(pid: int, millicores: int | None) -> Iterator[None]:
    """`pid` (all its threads) in a cgroup v1 cpu group with a CFS quota of `millicores`, as
    the chart's limits.cpu puts the watcher (None: no group)."""
    if millicores is None:
        yield
        return
    group = CPU_ROOT / f"oomdump-bench-{os.getpid()}"
    group.mkdir()
    try:
        period = int((group / "cpu.cfs_period_us").read_text())
        (group / "cpu.cfs_quota_us").write_text(str(period * millicores // 1000))
        (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        with suppress(OSError):  # back to the root (gone already: fine), so the group can go
            (CPU_ROOT / "cgroup.procs").write_text(str(pid))
        group.rmdir()


@contextmanager
def app_in_group(profile: Path, view: PodView) -> Iterator[ProfileApp]:
    with memory_cgroup(LIMIT, prefix="oomdump-bench") as group:
        app = ProfileApp(group, profile)
        try:
            view.add(app.pid)
            yield app
        finally:
            app.stop()


def wait_new(log: Lines, seen: set[str], *needles: str, deadline: float = 30.0) -> str:
    """The first line with every needle not in `seen` (then added to it)."""
    line = log.wait_for(lambda text: text not in seen and all(n in text for n in needles), deadline)
    if line is None:
        raise RuntimeError(f"no new line with {needles}:\n" + "\n".join(log.lines[-20:]))
    seen.add(line)
    return line


def metadata_of(line: str) -> dict[str, Any]:
    path = line.split(" path=", 1)[1].split(" ", 1)[0]
    return json.loads(Path(path[: -len(".pb.gz")] + ".json").read_text())


def run_case(
    name: str, heavy_profile: bytes, rounds: int, folder: Path, millicores: int | None
) -> dict[str, Any]:
    heavy_path, next_path = folder / f"{name}-heavy.pb.gz", folder / f"{name}-next.pb.gz"
    heavy_path.write_bytes(heavy_profile)
    next_path.write_bytes(small_profile())
    proc = folder / f"{name}-proc"
    proc.mkdir()
    view = PodView(proc)
    env = {
        "PROC_ROOT": view.proc_root,
        "DUMP_DIR": str(folder / f"{name}-dumps"),
        "CRITICAL": "70",
        "COOLDOWN": f"{COOLDOWN:g}s",
    }
    figures: dict[str, Any] = {"crossing alone": [], "crossing beside": []}
    figures |= {"detected alone": [], "detected beside": [], "heavy read": []}
    outcomes: set[str] = set()
    during = 0
    with ExitStack() as stack:
        watcher = stack.enter_context(WatcherProcess(env))
        stack.enter_context(cpu_limited(watcher.process.pid, millicores))
        heavy = stack.enter_context(app_in_group(heavy_path, view))
        after = stack.enter_context(app_in_group(next_path, view))
        log, seen = watcher.log, set[str]()
        for app in (heavy, after):
            wait_new(log, seen, "event=ports", f"pid={app.pid} ", f":{app.port}")
        for index in range(2 * rounds):
            beside = index % 2 == 1
            if beside:  # heavy's reading starts once its complete profile is saved
                heavy.cross(THRESHOLD)
                wait_new(log, seen, "event=dump-saved", f"pid={heavy.pid} ", "gc=True")
            crossed = after.cross(THRESHOLD)
            if beside:
                heavy.let_go()  # below again, so that its cooldown brings no second capture
            first = wait_new(log, seen, "event=dump-saved", f"pid={after.pid} ", "gc=False")
            wait_new(log, seen, "event=dump-saved", f"pid={after.pid} ", "gc=True")
            after.let_go()
            timings = metadata_of(first)["timings"]
            if timings["fetch_started_monotonic"] < crossed:
                raise RuntimeError(f"a capture of next from before its crossing: {first}")
            kind = "beside" if beside else "alone"
            figures[f"crossing {kind}"].append(
                1000 * (timings["fetch_started_monotonic"] - crossed)
            )
            figures[f"detected {kind}"].append(timings["detected_to_fetch_start_ms"])
            if beside:
                windows = []
                for _ in range(2):  # both of heavy's dumps read before the next round
                    read = metadata_of(wait_new(log, seen, "event=dump-top", f"pid={heavy.pid} "))
                    outcomes.add(str(read.get("top_error", "read"))[:40])
                    if "top_read" in read:
                        started = read["top_read"]["started_monotonic"]
                        seconds = read["top_read"]["seconds"]
                        windows.append((started, started + seconds))
                        figures["heavy read"].append(1000 * seconds)
                if windows:
                    begin, end = min(w[0] for w in windows), max(w[1] for w in windows)
                    during += begin < timings["detected_monotonic"] < end
            ready = time.monotonic() + COOLDOWN + 0.1
            while time.monotonic() < ready:  # the cooldown itself: the next round's condition
                time.sleep(ready - time.monotonic())
    figures["outcome"] = ", ".join(sorted(outcomes))
    figures["during"] = during
    return figures


def row(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):6.1f}  max {max(values):6.1f}  n {len(values)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--case", choices=("20", "deadline"), help="one case only")
    parser.add_argument("--each", action="store_true", help="every round's figures too")
    parser.add_argument(
        "--cpu-limit", type=int, metavar="MILLICORES", help="the watcher's CFS quota (chart: 200)"
    )
    args = parser.parse_args()
    reason = cgroup_v1_unavailable()
    if reason is not None:
        print(f"needs real cgroup v1 memory groups: {reason}", file=sys.stderr)
        return 2
    cases = {"20 MiB Go-shaped": go_shaped_20_mib, "deadline": deadline_profile}
    with tempfile.TemporaryDirectory() as folder:
        for name, build in cases.items():
            if args.case and not name.startswith(args.case):
                continue
            figures = run_case(name.split()[0], build(), args.rounds, Path(folder), args.cpu_limit)
            print(f"{name}: heavy's reads: {figures.pop('outcome')}")
            during = figures.pop("during")
            for label, values in figures.items():
                print(f"  {label:16} {row(values)} ms")
                if args.each:
                    print(f"  {'':16} {' '.join(f'{value:.1f}' for value in values)}")
            if figures["heavy read"]:
                print(f"  next was detected while heavy was read in {during} of {args.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
