"""A pprof endpoint that answers every GET with one profile file, and holds as much memory as
it is told to (python profile_server.py PROFILE): the app whose capture a test or bench
times, in a cgroup of its own.

It prints `listening <port>` once ready. Each line `hold <MiB> [<more MiB>]` on its stdin
makes it let go of what it held, then hold that many MiB of touched pages (charged to its
cgroup), then that many more, and print `holding <MiB> <t0> <t1>`: CLOCK_MONOTONIC (which is
system-wide) between the two steps and after the last, so a caller that puts its threshold
inside the second step knows when the memory crossed it. `hold 0` lets everything go. It
exits when its stdin closes (the parent went away).

`ProfileApp` starts it in a test's memory cgroup and drives it.
"""

import mmap
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # run as a script, the server imports nothing of the project
    from testinfra.cgroups import MemoryCgroup

MiB = 1024 * 1024
# The crossing step: small, so the time noted before it is close to the crossing; above any
# page cache the group holds, which the watcher's working set leaves out.
BELOW_MIB = 1
STEP_MIB = 4


class ProfileApp:
    """This server, serving `profile`, started in `group` (stopped by `stop`)."""

    def __init__(self, group: "MemoryCgroup", profile: Path) -> None:
        self.group = group
        self.process = group.spawn(
            [sys.executable, __file__, str(profile)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid
        self.port = int(self._answer().split()[1])

    def cross(self, threshold_bytes: int) -> float:
        """Take memory up to BELOW_MIB under `threshold_bytes` of working set, then STEP_MIB
        more; the monotonic time between the two (just before the crossing)."""
        working_set = self.group.usage_bytes() - self.group.stat("total_inactive_file")
        below = (threshold_bytes - working_set) // MiB - BELOW_MIB
        if below < 0:
            raise RuntimeError(f"already within {BELOW_MIB} MiB of {threshold_bytes} bytes")
        return float(self._command(f"hold {below} {STEP_MIB}").split()[2])

    def let_go(self) -> None:
        self._command("hold 0")

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def _command(self, text: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        return self._answer()

    def _answer(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(("listening", "holding")):
            raise RuntimeError(f"profile server {self.pid} said {line!r}")
        return line


def serve(profile: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as net/http/pprof answers

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(profile)))
            self.end_headers()
            self.wfile.write(profile)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    with open(sys.argv[1], "rb") as file:
        profile = file.read()
    server = serve(profile)
    print(f"listening {server.server_address[1]}", flush=True)
    held: list[mmap.mmap] = []
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] != "hold" or not 2 <= len(words) <= 3:
            print(f"unknown command {line.strip()!r}", flush=True)
            continue
        steps = [int(word) for word in words[1:]] + [0]
        for pages in held:  # the old pages go back before the new ones are taken
            pages.close()
        held.clear()
        stamps = []
        for mib in steps[:2]:
            held.append(touched(mib))
            stamps.append(time.monotonic())
        print(f"holding {sum(steps)} {stamps[0]} {stamps[1]}", flush=True)


def touched(mib: int) -> mmap.mmap:
    # A mapping of its own, unmapped when let go: malloc would keep freed pages for reuse,
    # and the cgroup would still count them.
    pages = mmap.mmap(-1, max(mib, 1) * 1024 * 1024)
    for index in range(0, mib * 1024 * 1024, 4096):
        pages[index] = 1  # touch every page so it counts against the cgroup
    return pages


if __name__ == "__main__":
    main()
