"""Runs inside the cgroup v2 guest (testinfra.vm) as root: real v2 groups with memory.max,
the real Go leak, the real watcher (`python -m sidecar`). Writes what the kernel and the
watcher did into OUT (results.json, the watchers' logs, their dumps) for tests/v2 to check.

Usage: guest_scenario.py OUT LEAK_BINARY

Three watchers start at once (the import costs ~16 s in the guest; one boot serves all):
- `plain` (DETECT_MODE=auto, no brake) runs as a sidecar container does: in a group and
  cgroup namespace of its own. It watches leak `ctr`, started as a container's process (own
  cgroup and mount namespaces, cgroup2 mounted read-only at /sys/fs/cgroup); after `ctr` is
  OOM-killed its group is removed and made again with a new leak `ctr2` (a container
  restart). It also watches leak `host`, which shares the guest's mount namespace, so its
  cgroup lies outside the watcher's cgroup namespace (`0::/../host`).
- `brake` (EMERGENCY_BRAKE=true) watches leak `brake_host` (group seen directly) and
  `brake_ctr` (a container's read-only cgroupfs), while this script records every value
  memory.high takes.
- `wake` (WATCH_TIME=10s, its maximum, and METRICS_PORT) watches leak `wake` in a group whose
  memory.max is 64 GiB: its threshold is so far off that the adaptive plan samples it only
  every 10 s. Once it is watched, memory.high is set just above its usage: the kernel raises
  `high` in memory.events as the leak passes it, which must wake the watcher at once (its
  `detector-wake` line says when, and how far off the next scheduled sample was), long
  before that sample. Then /metrics is scraped and the leak killed.
Each leak grows 4 MiB/s towards 128 MiB: slow enough for the emulated guest (~60x slower
than the host) to capture before the kill. This checks correctness against the real kernel,
not the race.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sidecar.detection.inotify import Inotify

MiB = 1024 * 1024
GiB = 1024 * MiB
LIMIT = 128 * MiB
CRITICAL = 60
LEAK_SHAPE = ["-mode", "gradual", "-step", str(2 * MiB), "-interval", "500ms"]
CGROUP = Path("/sys/fs/cgroup")
PARENT = CGROUP / "oomdump-v2"
CONTAINER_MOUNT = "ro,nosuid,nodev,noexec"  # containerd's default for an unprivileged pod
HERE = Path(__file__).resolve().parent
SCENARIO_SECONDS = 400.0  # every wait below ends by then
TICK = 0.02
# The wake check: memory.max far above the guest's 2 GiB (threshold 38.4 GiB: at the planned
# 1.5 GiB/s it is 25 s away, so the plan is the whole WATCH_TIME), memory.high set this far
# above the leak's usage once the watcher watches it.
WAKE_LIMIT = 64 * GiB
WAKE_WATCH_TIME = 10.0
WAKE_HIGH_ABOVE = 2 * MiB
WAKE_METRICS_PORT = 9464
WAKE_SECONDS = 60.0  # from memory.high set to the watcher's detector-wake line, at most


class Group:
    """A cgroup v2 group below PARENT with memory.max and no swap."""

    def __init__(self, name: str, parent: Path = PARENT, limit: int = LIMIT) -> None:
        self.name = name
        self.path = parent / name
        self.limit = limit

    def create(self) -> None:
        self.path.mkdir()
        (self.path / "memory.max").write_text(str(self.limit))
        if (self.path / "memory.swap.max").exists():
            (self.path / "memory.swap.max").write_text("0")

    def read(self, name: str) -> str:
        return (self.path / name).read_text().strip()

    def events(self) -> dict[str, int]:
        pairs = (line.split() for line in self.read("memory.events").splitlines())
        return {key: int(value) for key, value in pairs}

    def remove(self) -> None:
        for _ in range(250):  # an exited task leaves its group within a few ms
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(TICK)
        self.path.rmdir()


class Leak:
    """The Go leak in `group`, seen directly or from a container's namespaces."""

    def __init__(self, name: str, group: Group, binary: str, out: Path, container: bool) -> None:
        self.name = name
        self.group = group
        self.container = container
        view = out / f"{name}.view"
        leak = [binary, "-port", "0", *LEAK_SHAPE]
        if container:
            args = ["sh", str(HERE / "enter_container.sh"), str(group.path), CONTAINER_MOUNT]
            args += [str(view), *leak]
        else:
            args = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group.path), *leak]
        self.events_before = group.events()
        self.events_ino = (group.path / "memory.events").stat().st_ino
        with open(out / f"{name}.log", "wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.started = time.monotonic()
        self.view = view
        self.exit_code: int | None = None
        self.exited_monotonic: float | None = None
        self.exited_wall: float | None = None
        self.events_after: dict[str, int] | None = None
        self.seen_by_watcher = ""

    def running_leak(self, binary: str) -> bool:
        """True once the wrapper has exec'd the leak (namespaces and mounts in place), as a
        container's process appears in the pod only when its runtime has set it up."""
        try:
            return os.readlink(f"/proc/{self.process.pid}/exe") == binary
        except OSError:
            return self.process.poll() is not None

    def reap(self) -> bool:
        """True once the leak has exited (its exit noted; every tick looks)."""
        if self.exit_code is not None:
            return True
        code = self.process.poll()
        if code is None:
            return False
        self.exited_monotonic, self.exited_wall = time.monotonic(), time.time()
        self.exit_code = code
        self.events_after = self.group.events()
        return True

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reap()

    def result(self) -> dict[str, object]:
        return {
            "pid": self.process.pid,
            "group": f"/{self.group.path.relative_to(CGROUP)}",
            "container": self.container,
            "limit": LIMIT,
            "started_monotonic": self.started,
            "exit_code": self.exit_code,
            "exited_monotonic": self.exited_monotonic,
            "exited_wall": self.exited_wall,
            "events_before": self.events_before,
            "events_after": self.events_after,
            "memory_events_ino": self.events_ino,
            "inside_view": self.view.read_text() if self.view.exists() else None,
            "seen_by_watcher": self.seen_by_watcher,
        }


class Watcher:
    """`python -m sidecar` whose PROC_ROOT shows only the leaks added to it (a pod's view)."""

    def __init__(
        self, name: str, out: Path, extra_env: dict[str, str], sidecar: Group | None = None
    ) -> None:
        self.name = name
        self.sidecar = sidecar
        scratch = Path(tempfile.mkdtemp(prefix=f"oomdump-{name}-"))
        self.view = scratch / "proc"
        self.view.mkdir()
        self.dump_dir = scratch / "dumps"
        self.log_path = out / f"watcher-{name}.log"
        env = {
            **os.environ,
            "CRITICAL": str(CRITICAL),
            "WATCH_TIME": "100ms",
            "COOLDOWN": "120s",
            "DETECT_MODE": "auto",
            "DUMP_DIR": str(self.dump_dir),
            "PROC_ROOT": str(self.view),
            **extra_env,
        }
        args = [sys.executable, "-m", "sidecar"]
        if sidecar is not None:
            # As a sidecar container on a v2 node: in its own group and cgroup namespace.
            enter = 'echo $$ > "$0/cgroup.procs" && exec unshare --cgroup "$@"'
            args = ["sh", "-c", enter, str(sidecar.path), *args]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.inotify_snapshots: list[list[dict[str, str]]] = []
        self.own_view = ""

    def started(self) -> bool:
        if "event=watch-start" not in self.log():
            return False
        self.own_view = Path(f"/proc/{self.process.pid}/cgroup").read_text().strip()
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def add(self, leak: Leak) -> None:
        (self.view / str(leak.process.pid)).symlink_to(f"/proc/{leak.process.pid}")
        # /proc/<pid>/cgroup as the kernel shows it to the watcher (its cgroup namespace).
        seen = subprocess.run(
            [
                "nsenter",
                "-t",
                str(self.process.pid),
                "-C",
                "cat",
                f"/proc/{leak.process.pid}/cgroup",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        leak.seen_by_watcher = seen.stdout.strip() or seen.stderr.strip()

    def remove(self, leak: Leak) -> None:
        (self.view / str(leak.process.pid)).unlink(missing_ok=True)

    def snapshot_inotify(self) -> None:
        """The inotify watches the watcher's process holds, as the kernel lists them."""
        watches: list[dict[str, str]] = []
        fdinfo = Path(f"/proc/{self.process.pid}/fdinfo")
        try:
            for entry in fdinfo.iterdir():
                for line in entry.read_text().splitlines():
                    if line.startswith("inotify "):
                        fields = dict(p.split(":", 1) for p in line.split()[1:] if ":" in p)
                        watches.append(fields)
        except OSError:
            return
        if not self.inotify_snapshots or self.inotify_snapshots[-1] != watches:
            self.inotify_snapshots.append(watches)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def result(self, out: Path) -> dict[str, object]:
        dumps = out / f"dumps-{self.name}"
        if self.dump_dir.exists():
            shutil.copytree(self.dump_dir, dumps)
        return {
            "pid": self.process.pid,
            "exit_code": self.process.returncode,
            "log": self.log_path.name,
            "dumps": dumps.name,
            "inotify_snapshots": self.inotify_snapshots,
            "own_cgroup_view": self.own_view,
        }


def wait_for(condition: object, deadline: float, tick: object = None) -> bool:
    """Poll `condition()` until true or the deadline; `tick()` runs on every pass."""
    while time.monotonic() < deadline:
        if tick is not None:
            tick()  # type: ignore[operator]
        if condition():  # type: ignore[operator]
            return True
        time.sleep(TICK)
    return False


def scrape(port: int) -> str:
    """GET /metrics over a plain socket (urllib's import costs seconds in the guest)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        while chunk := connection.recv(65536):
            answer += chunk
    return answer.decode(errors="replace").partition("\r\n\r\n")[2]


def check_wake(
    watcher: Watcher, group: Group, binary: str, out: Path, deadline: float, tick: object
) -> dict[str, object]:
    """The `wake` watcher's check (see the module's docstring): what the scenario saw."""
    leak = Leak("wake", group, binary, out, container=False)
    found: dict[str, object] = {"pid": leak.process.pid, "limit": group.limit}
    try:
        wait_for(lambda: leak.running_leak(binary), deadline, tick)
        watcher.add(leak)
        watching = f"event=watching pid={leak.process.pid} "
        found["watched"] = wait_for(lambda: watching in watcher.log(), deadline, tick)
        found["watching_seen_monotonic"] = time.monotonic()
        usage = int(group.read("memory.current"))
        found["events_before"] = group.events()
        (group.path / "memory.high").write_text(str(usage + WAKE_HIGH_ABOVE))
        found["high_set_monotonic"] = time.monotonic()
        found["usage_at_high_set"] = usage
        found["memory_high"] = group.read("memory.high")
        woke = "event=detector-wake source=memory.events"
        until = min(deadline, time.monotonic() + WAKE_SECONDS)
        found["woke"] = wait_for(lambda: woke in watcher.log(), until, tick)
        found["woke_seen_monotonic"] = time.monotonic()
        try:
            found["metrics"] = scrape(WAKE_METRICS_PORT)
        except OSError as error:
            found["metrics_error"] = repr(error)
        found["scraped_monotonic"] = time.monotonic()
    finally:
        leak.kill()
        found["events_after"] = leak.events_after
    return found


def loopback_up() -> bool:
    """Bring lo up for the /metrics scrape; True when it was down."""
    flags = int(Path("/sys/class/net/lo/flags").read_text(), 16)
    if flags & 0x1:  # IFF_UP
        return False
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=60)
    return True


def enable_memory_controller() -> None:
    (CGROUP / "cgroup.subtree_control").write_text("+memory")
    PARENT.mkdir()
    (PARENT / "cgroup.subtree_control").write_text("+memory")


def main() -> int:
    out, binary = Path(sys.argv[1]), sys.argv[2]
    deadline = time.monotonic() + SCENARIO_SECONDS
    results: dict[str, object] = {
        "uname": os.uname().release,
        "cgroup_mount": [
            line
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if "cgroup" in line
        ],
        "controllers": (CGROUP / "cgroup.controllers").read_text().split(),
        "scenario_started_monotonic": time.monotonic(),
        "scenario_started_wall": time.time(),
    }
    enable_memory_controller()
    results["loopback_was_down"] = loopback_up()
    names = ("host", "ctr", "brake_host", "brake_ctr", "sidecar")
    groups = {name: Group(name) for name in names}
    groups["wake"] = Group("wake", limit=WAKE_LIMIT)
    for group in groups.values():
        group.create()
    (groups["sidecar"].path / "memory.max").write_text("max")
    # A group at the top named like `host`: where a watcher that drops the `..` of a path
    # outside its cgroup namespace would look instead (a wrong group, a wrong limit).
    decoy = Group("host", parent=CGROUP, limit=2 * LIMIT)
    decoy.create()
    plain = Watcher("plain", out, {}, sidecar=groups["sidecar"])
    brake = Watcher("brake", out, {"EMERGENCY_BRAKE": "true"})
    wake = Watcher(
        "wake",
        out,
        {"WATCH_TIME": f"{WAKE_WATCH_TIME:g}s", "METRICS_PORT": str(WAKE_METRICS_PORT)},
    )
    watchers = (plain, brake)  # the OOM-killed leaks' watchers
    every_watcher = (plain, brake, wake)
    leaks: dict[str, Leak] = {}
    highs: dict[str, list[tuple[float, str]]] = {"brake_host": [], "brake_ctr": []}
    notify = Inotify()  # this script's own inotify: does the kernel report memory.events?
    notified: dict[str, int] = {}
    wds: dict[int, str] = {}

    def tick() -> None:
        for name, changes in highs.items():
            with_value = groups[name].read("memory.high")
            if not changes or changes[-1][1] != with_value:
                changes.append((time.monotonic(), with_value))
        for wd in notify.read():
            if wd in wds:
                notified[wds[wd]] = notified.get(wds[wd], 0) + 1
        for watcher in every_watcher:
            watcher.snapshot_inotify()
        for leak in leaks.values():
            leak.reap()  # its exit time noted at once, whatever the scenario waits for

    def start(name: str, group: str, watcher: Watcher, container: bool) -> Leak:
        leak = Leak(name, groups[group], binary, out, container)
        leaks[name] = leak
        wds[notify.add(groups[group].path / "memory.events")] = name
        wait_for(lambda: leak.running_leak(binary), deadline, tick)
        watcher.add(leak)
        return leak

    try:
        started = wait_for(lambda: all([w.started() for w in every_watcher]), deadline, tick)
        results["watchers_started"] = started
        results["watchers_started_monotonic"] = time.monotonic()
        if started:
            start("host", "host", plain, container=False)
            ctr = start("ctr", "ctr", plain, container=True)
            start("brake_host", "brake_host", brake, container=False)
            start("brake_ctr", "brake_ctr", brake, container=True)
            # While those four leak towards memory.max:
            wds[notify.add(groups["wake"].path / "memory.events")] = "wake"
            results["wake"] = check_wake(wake, groups["wake"], binary, out, deadline, tick)
            # A container restart: the killed container's group is removed and made anew.
            if wait_for(ctr.reap, deadline, tick):
                plain.remove(ctr)
                groups["ctr"].remove()
                groups["ctr"].create()
                results["ctr_group_recreated_monotonic"] = time.monotonic()
                start("ctr2", "ctr", plain, container=True)
            wait_for(lambda: all([leak.reap() for leak in leaks.values()]), deadline, tick)
            # The watchers notice the exits and log process-gone at their next refresh.
            wait_for(
                lambda: all(w.log().count("event=process-gone") >= 2 for w in watchers),
                min(deadline, time.monotonic() + 30),
                tick,
            )
            tick()
            for leak in leaks.values():
                leak.reap()
    finally:
        for leak in leaks.values():
            leak.kill()
        for watcher in every_watcher:
            watcher.stop()
        notify.close()
        decoy.remove()
    results["leaks"] = {name: leak.result() for name, leak in leaks.items()}
    results["watchers"] = {w.name: w.result(out) for w in every_watcher}
    results["decoy"] = {"group": f"/{decoy.name}", "limit": decoy.limit}
    results["memory_high"] = highs
    results["memory_high_after"] = {name: groups[name].read("memory.high") for name in highs}
    results["inotify_modifies"] = notified
    results["scenario_seconds"] = time.monotonic() - results["scenario_started_monotonic"]  # type: ignore[operator]
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
