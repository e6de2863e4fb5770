"""`make demo`: watch a leaking Go program get its heap captured, then OOM-killed.

1. builds examples/go-memory-leak (cached in ~/.cache/oomdump)
2. makes a memory-limited cgroup (v1 here; v2 when the machine's cgroup2 has the memory
   controller) and starts the program in it
3. runs the sidecar (`python -m sidecar`) beside it in a PID namespace of their own, as in
   a pod with a shared process namespace, dumping to a local DUMP_DIR
4. prints the captured dump's path and the `go tool pprof -top` lines naming the leak
5. shows the kernel's OOM kill of the program, stops the sidecar and cleans up

Needs root (cgroups, namespaces). Ends by itself within DEMO_DEADLINE seconds.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from testinfra.cgroups import cgroup_v1_unavailable, memory_cgroup  # noqa: E402
from testinfra.gobuild import GoBuildError, build_local  # noqa: E402

MiB = 1024 * 1024
LIMIT = 200 * MiB  # the leak doubles 4, 8, ... 128 MiB (64% of this), then 256 MiB: killed
CRITICAL = 50
DEMO_DEADLINE = 45.0
DUMP_DIR = Path(os.environ.get("DEMO_DUMP_DIR", "/tmp/oomdump-demo"))
V2_ROOT = Path("/sys/fs/cgroup")


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def fail(text: str) -> None:
    print(f"demo: error: {text}", file=sys.stderr, flush=True)
    sys.exit(2)


def free_port(preferred: int = 8080) -> int:
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError("no free TCP port")


class V2Group:
    """The bits of a cgroup v2 group the demo needs (only on machines with v2 memory)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def spawn(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        script = 'echo $$ > "$0" && exec "$@"'
        procs = str(self.path / "cgroup.procs")
        return subprocess.Popen(["/bin/sh", "-c", script, procs, *argv], **kwargs)  # type: ignore[call-overload]

    def oom_kills(self) -> int:
        for line in (self.path / "memory.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def pids(self) -> list[int]:
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]


@contextmanager
def v2_cgroup(limit: int) -> Iterator[V2Group]:
    path = V2_ROOT / f"oomdump-demo-{secrets.token_hex(4)}"
    path.mkdir()
    group = V2Group(path)
    try:
        (path / "memory.max").write_text(str(limit))
        swap = path / "memory.swap.max"
        if swap.exists():
            swap.write_text("0")
        yield group
    finally:
        deadline = time.monotonic() + 10
        while group.pids() and time.monotonic() < deadline:
            for pid in group.pids():
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        while True:
            try:
                path.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


def choose_cgroup() -> tuple[str, object]:
    """("v1" | "v2", context manager of a limited group), or exit with the reason."""
    if os.geteuid() != 0:
        fail("run the demo as root: it creates a memory cgroup and a PID namespace")
    v1_reason = cgroup_v1_unavailable()
    if v1_reason is None:
        return "v1", memory_cgroup(LIMIT, prefix="oomdump-demo")
    controllers = V2_ROOT / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        return "v2", v2_cgroup(LIMIT)
    fail(f"no usable memory cgroup: cgroup v1 ({v1_reason}); cgroup v2 has no memory controller")
    raise AssertionError("unreachable")


def follow(stream: object, lines: list[str], saved: threading.Event) -> None:
    for raw in stream:  # type: ignore[attr-defined]
        line = raw.decode(errors="replace").rstrip()
        lines.append(line)
        shown = ("event=watch-start", "event=watching", "event=dump-saved", "event=fetch-failed")
        if any(event in line for event in shown) or "level=error" in line:
            print(f"  sidecar | {line}", flush=True)
        if "event=dump-saved" in line:
            saved.set()


def dump_path(line: str) -> Path:
    for field in line.split():
        if field.startswith("path="):
            return Path(field[5:])
    raise ValueError(line)


def dumps_top(dump: Path) -> list[str]:
    """`oomdump dumps top` (the project's own profile reader: no Go needed)."""
    result = subprocess.run(
        [sys.executable, "-m", "oomdump.cli", "dumps", "top", str(dump), "-n", "8"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        return [f"oomdump dumps top failed: {result.stderr.strip()}"]
    return result.stdout.splitlines()


def main() -> int:
    started = time.monotonic()
    version, group_context = choose_cgroup()
    if shutil.which("unshare") is None:
        fail("`unshare` (util-linux) is needed to give the sidecar a pod-like PID namespace")
    say("building examples/go-memory-leak ...")
    try:
        binary = build_local("go-memory-leak", REPO / "examples" / "go-memory-leak")
    except GoBuildError as error:
        fail(str(error))
    shutil.rmtree(DUMP_DIR, ignore_errors=True)
    port = free_port()

    with group_context as group:  # type: ignore[attr-defined]
        cgroup_procs = Path(group.path) / "cgroup.procs"
        say(
            f"cgroup {version} {group.path}: memory limit {LIMIT // MiB} MiB, "
            f"sidecar CRITICAL={CRITICAL}%"
        )
        # The app joins the limited group, the sidecar stays outside it; both share a fresh
        # PID namespace (the sidecar is its PID 1), like containers of one pod.
        app = (
            f"sh -c 'echo $$ > {cgroup_procs} && exec {binary} -mode doubling "
            f"-interval 1s -port {port}' > /dev/null &"
        )
        sidecar = f"exec {sys.executable} -m sidecar"
        env = {
            **os.environ,
            "CRITICAL": str(CRITICAL),
            "WATCH_TIME": "100ms",
            "COOLDOWN": "30s",
            "DUMP_DIR": str(DUMP_DIR),
            "POD_NAMESPACE": "demo",
            "POD_NAME": "go-memory-leak",
            "PYTHONPATH": str(REPO),
        }
        env.pop("BUCKET", None)
        pod = subprocess.Popen(
            [
                "unshare",
                "--pid",
                "--mount-proc",
                "--kill-child=SIGTERM",
                "--",
                "/bin/sh",
                "-c",
                f"{app} {sidecar}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        lines: list[str] = []
        saved = threading.Event()
        reader = threading.Thread(target=follow, args=(pod.stderr, lines, saved), daemon=True)
        reader.start()
        say(f"app serving pprof on :{port}, retained heap doubling every second ...")
        try:
            deadline = started + DEMO_DEADLINE
            while time.monotonic() < deadline and group.oom_kills() == 0 and pod.poll() is None:
                time.sleep(0.05)
            killed = group.oom_kills() > 0
        finally:
            with suppress(ProcessLookupError):
                os.killpg(pod.pid, signal.SIGTERM)
            try:
                pod.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(pod.pid, signal.SIGKILL)
                pod.wait()
            reader.join(5)

    saved_lines = [line for line in lines if "event=dump-saved" in line]
    print()
    if not saved_lines:
        say("no dump was captured; the sidecar said:")
        for line in lines[-20:]:
            print(f"  {line}")
        return 1
    dumps = [dump_path(line) for line in saved_lines]
    say(f"captured {len(dumps)} heap profile(s) before the kill:")
    for path in dumps:
        print(f"  {path}")
    best = next(
        (p for p, line in zip(dumps, saved_lines, strict=True) if "gc=True" in line), dumps[0]
    )
    say(f"oomdump dumps top {best.name}")
    for line in dumps_top(best)[:12]:
        marker = "   <-- the leak" if "leakDocuments" in line else ""
        print(f"  {line}{marker}")
    print()
    if killed:
        say(f"the kernel OOM-killed the app (cgroup {version} oom_kill count >= 1):")
        kernel = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
        kills = [
            line
            for line in kernel.splitlines()
            if "Killed process" in line and "go-memory-leak" in line
        ]
        print(f"  {kills[-1] if kills else '(dmesg unreadable; memory.oom_control says so)'}")
    else:
        say(f"the app was not OOM-killed within {DEMO_DEADLINE:g}s")
    say(f"done in {time.monotonic() - started:.1f}s; dumps stay in {DUMP_DIR}")
    return 0 if killed else 1


if __name__ == "__main__":
    sys.exit(main())
