"""The process table: which processes under PROC_ROOT are candidates for watching.

A process is keyed by pid and start time (field 22 of /proc/<pid>/stat), so a reused pid is
a new process. Processes vanish at any moment; a vanished one is simply not listed.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

PF_KTHREAD = 0x00200000  # task flag of kernel threads (include/linux/sched.h)


class ProcessKey(NamedTuple):  # a tuple: hashed and compared in C, many times a second
    pid: int
    starttime: int  # clock ticks since boot


@dataclass(frozen=True)
class Process:
    key: ProcessKey
    comm: str

    @property
    def pid(self) -> int:
        return self.key.pid


@dataclass(frozen=True)
class Stat:
    comm: str
    flags: int
    starttime: int


def parse_stat(text: str) -> Stat:
    """The fields of /proc/<pid>/stat the watcher needs; comm may hold spaces and ')'."""
    open_paren = text.index("(")
    close_paren = text.rindex(")")
    comm = text[open_paren + 1 : close_paren]
    rest = text[close_paren + 2 :].split()
    # rest[0] is field 3 (state): field n is rest[n - 3].
    return Stat(comm=comm, flags=int(rest[9 - 3]), starttime=int(rest[22 - 3]))


def read_stat(proc_root: Path, pid: int) -> Stat | None:
    """None when the process is gone. (os-level reads: a third of pathlib's cost, and the
    refresh reads this for every process.)"""
    try:
        fd = os.open(f"{proc_root}/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        return parse_stat(data.decode(errors="replace"))
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def is_alive(proc_root: Path, key: ProcessKey) -> bool:
    stat = read_stat(proc_root, key.pid)
    return stat is not None and stat.starttime == key.starttime


def is_namespace_init(proc_root: Path, pid: int) -> bool:
    """Whether `pid` is PID 1 of its own PID namespace, as the pod sandbox's pause process
    is (its comm alone is the app's to choose). The NSpid line of /proc/<pid>/status names
    the process in each nested namespace, innermost last; without it (a prepared tree), the
    number PROC_ROOT gives it decides."""
    try:
        fd = os.open(f"{proc_root}/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
        try:
            status = os.read(fd, 8192).decode(errors="replace")
        finally:
            os.close(fd)
    except OSError:
        return pid == 1
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return line.split()[-1] == "1"
    return pid == 1


def own_pid(proc_root: Path) -> int:
    """This process's pid as PROC_ROOT numbers it (its PID namespace may differ)."""
    try:
        return int(os.readlink(proc_root / "self"))
    except (OSError, ValueError):
        return os.getpid()


def pid_names(proc_root: Path) -> frozenset[str]:
    """The PIDs under PROC_ROOT, as names: one listdir, the cheap look for a new process."""
    return frozenset(name for name in os.listdir(proc_root) if name.isdigit())


def scan(
    proc_root: Path, self_pid: int, pids: frozenset[str] | None = None
) -> tuple[list[Process], dict[ProcessKey, str]]:
    """Candidate processes (of `pids`, default: all), and the ones never to watch with the
    reason why."""
    candidates: list[Process] = []
    skipped: dict[ProcessKey, str] = {}
    try:
        entries = pid_names(proc_root) if pids is None else pids
    except OSError as error:
        raise RuntimeError(f"cannot list PROC_ROOT {proc_root}: {error}") from error
    for name in entries:
        pid = int(name)
        stat = read_stat(proc_root, pid)
        if stat is None:
            continue  # vanished between listdir and read
        key = ProcessKey(pid, stat.starttime)
        if pid == self_pid:
            skipped[key] = "the watcher itself"
        elif stat.flags & PF_KTHREAD:
            skipped[key] = "kernel thread"
        elif stat.comm == "pause" and is_namespace_init(proc_root, pid):
            skipped[key] = "pod sandbox pause process"
        else:
            candidates.append(Process(key, stat.comm))
    candidates.sort(key=lambda process: process.key)
    return candidates, skipped
