"""A process's memory cgroup: where it is, and how full it is.

The cgroup is resolved from /proc/<pid>/cgroup and /proc/<pid>/mountinfo, and its files are
read through /proc/<pid>/root, so the watcher sees the cgroupfs exactly as the process's
container mounts it. Both files show cgroup paths relative to the *reader's* cgroup
namespace; the mountinfo `root` field says which cgroup the mount's top is. The process's
directory is the mount point plus its cgroup path relative to that root. When the mount's
root is not an ancestor (a cgroup namespace whose `0::/` view the mount does not share) the
mount point itself is the process's cgroup.
"""

import os
import posixpath
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from sidecar.config import MemoryMetric

# cgroup v1 writes "no limit" as PAGE_COUNTER_MAX pages rounded to the page size (about
# 2**63); anything at or above this counts as unlimited.
V1_UNLIMITED = 2**62


class CgroupError(Exception):
    """The process's memory cgroup cannot be found or read; the message says why."""


@dataclass(frozen=True)
class MemoryCgroup:
    version: Literal[1, 2]
    path: str  # cgroup path as /proc/<pid>/cgroup names it
    directory: Path  # the directory, as this process can open it


class MemorySample(NamedTuple):  # a tuple: built many times a second, cheaply
    usage_bytes: int  # the chosen metric: working set or raw usage
    raw_usage_bytes: int
    # None: memory.stat was not read because raw usage was below the caller's threshold;
    # usage_bytes is then raw usage, an upper bound of the working set.
    inactive_file_bytes: int | None
    limit_bytes: int | None  # None = no limit

    def percent(self) -> float | None:
        if not self.limit_bytes:
            return None
        return 100.0 * self.usage_bytes / self.limit_bytes


@dataclass(frozen=True)
class Mount:
    root: str
    mount_point: str
    fstype: str
    super_options: tuple[str, ...]


def parse_cgroup_file(text: str) -> tuple[Literal[1, 2], str]:
    """(version, path) of the memory controller in a /proc/<pid>/cgroup text."""
    unified: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if "memory" in controllers.split(","):
            return 1, path
        if hierarchy == "0" and controllers == "":
            unified = path
    if unified is None:
        raise CgroupError("no memory controller and no cgroup v2 line in /proc/<pid>/cgroup")
    return 2, unified


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    return field.encode().decode("unicode_escape") if "\\" in field else field


def parse_mountinfo(text: str) -> list[Mount]:
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 5 or len(fields) < dash + 4:
            continue
        mounts.append(
            Mount(
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                fstype=fields[dash + 1],
                super_options=tuple(fields[dash + 3].split(",")),
            )
        )
    return mounts


def _relative(path: str, root: str) -> str | None:
    """`path` below `root` ('' when equal), or None when `root` is not an ancestor."""
    path = posixpath.normpath(path)
    root = posixpath.normpath(root)
    if path == root:
        return ""
    prefix = root.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else None


def locate(version: Literal[1, 2], path: str, mounts: list[Mount]) -> tuple[str, str]:
    """(mount point, path below it) of the cgroup, as the process's mount table shows it."""
    if version == 1:
        candidates = [m for m in mounts if m.fstype == "cgroup" and "memory" in m.super_options]
    else:
        candidates = [m for m in mounts if m.fstype == "cgroup2"]
    if not candidates:
        kind = "cgroup v1 memory" if version == 1 else "cgroup2"
        raise CgroupError(f"no {kind} mount in the process's mountinfo")
    inside = [(m, rel) for m in candidates if (rel := _relative(path, m.root)) is not None]
    if inside:
        mount, rel = max(inside, key=lambda pair: len(pair[0].root))
        return mount.mount_point, rel
    # A cgroup namespace whose root the mount does not show as an ancestor: the container
    # mounted its own cgroup at the mount point.
    return candidates[0].mount_point, ""


def resolve(proc_root: Path, pid: int) -> MemoryCgroup:
    """The memory cgroup of `pid`; CgroupError (or FileNotFoundError if it vanished)."""
    base = proc_root / str(pid)
    try:
        version, path = parse_cgroup_file((base / "cgroup").read_text())
        mounts = parse_mountinfo((base / "mountinfo").read_text())
    except FileNotFoundError:
        raise
    except OSError as error:
        raise CgroupError(f"cannot read {error.filename}: {error.strerror}") from error
    mount_point, rel = locate(version, path, mounts)
    directory = base / "root" / mount_point.lstrip("/")
    if rel:
        directory = directory / rel
    marker = "memory.usage_in_bytes" if version == 1 else "memory.current"
    if not (directory / marker).exists():
        raise CgroupError(f"{directory / marker} does not exist (cgroup {path}, v{version})")
    return MemoryCgroup(version=version, path=path, directory=directory)


def _memory_stat(directory: Path) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in (directory / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            fields[key] = int(value)
    return fields


def _v1_limit(directory: Path, stat: dict[str, int]) -> int | None:
    limit = int((directory / "memory.limit_in_bytes").read_text())
    # A parent's limit binds too (use_hierarchy): memory.stat reports the tightest one.
    hierarchical = stat.get("hierarchical_memory_limit")
    if hierarchical:
        limit = min(limit, hierarchical)
    return None if limit >= V1_UNLIMITED else limit


def _v2_limit(directory: Path) -> int | None:
    text = (directory / "memory.max").read_text().strip()
    return None if text == "max" else int(text)


def sample(cgroup: MemoryCgroup, metric: MemoryMetric) -> MemorySample:
    """Usage and limit now; OSError when the cgroup vanished with its process."""
    directory = cgroup.directory
    stat = _memory_stat(directory)
    if cgroup.version == 1:
        usage = int((directory / "memory.usage_in_bytes").read_text())
        inactive_file = stat.get("total_inactive_file", 0)
        limit = _v1_limit(directory, stat)
    else:
        usage = int((directory / "memory.current").read_text())
        inactive_file = stat.get("inactive_file", 0)
        limit = _v2_limit(directory)
    chosen = max(usage - inactive_file, 0) if metric == "working_set" else usage
    return MemorySample(
        usage_bytes=chosen,
        raw_usage_bytes=usage,
        inactive_file_bytes=inactive_file,
        limit_bytes=limit,
    )


def read_limit(cgroup: MemoryCgroup) -> int | None:
    """The memory limit in bytes, None when unlimited."""
    if cgroup.version == 1:
        return _v1_limit(cgroup.directory, _memory_stat(cgroup.directory))
    return _v2_limit(cgroup.directory)


class Sampler:
    """`sample` for one cgroup, many times a second: its files stay open and are re-read
    with pread, only the one memory.stat field needed is picked out, and the limit is the
    caller's (re-read by the refresh, not on every sample). OSError once the cgroup is gone.

    memory.stat costs most of a sample (tens of lines formatted by the kernel), so with a
    threshold it is read only when raw usage reaches it: the working set (usage minus
    inactive_file) cannot exceed raw usage, so below the threshold raw usage decides alone.
    `stat_reads` counts the memory.stat reads."""

    def __init__(self, cgroup: MemoryCgroup, metric: MemoryMetric) -> None:
        usage_file = "memory.usage_in_bytes" if cgroup.version == 1 else "memory.current"
        self._inactive_key = (
            b"\ntotal_inactive_file " if cgroup.version == 1 else b"\ninactive_file "
        )
        limit_file = "memory.limit_in_bytes" if cgroup.version == 1 else "memory.max"
        self._version = cgroup.version
        self._working_set = metric == "working_set"
        self._fds: list[int] = []
        try:
            for name in (usage_file, "memory.stat", limit_file):
                self._fds.append(os.open(cgroup.directory / name, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            self.close()
            raise
        self._usage_fd, self._stat_fd, self._limit_fd = self._fds
        self.stat_reads = 0

    def sample(self, limit_bytes: int | None, threshold_bytes: int | None = None) -> MemorySample:
        """Usage now; with `threshold_bytes`, memory.stat is skipped while raw usage is below
        it (the sample then carries raw usage and inactive_file_bytes None)."""
        usage = int(os.pread(self._usage_fd, 64, 0))
        if threshold_bytes is not None and usage < threshold_bytes:
            return MemorySample(
                usage_bytes=usage,
                raw_usage_bytes=usage,
                inactive_file_bytes=None,
                limit_bytes=limit_bytes,
            )
        self.stat_reads += 1
        inactive_file = self._inactive_file(os.pread(self._stat_fd, 65536, 0))
        return MemorySample(
            usage_bytes=max(usage - inactive_file, 0) if self._working_set else usage,
            raw_usage_bytes=usage,
            inactive_file_bytes=inactive_file,
            limit_bytes=limit_bytes,
        )

    def limit(self) -> int | None:
        """As `read_limit`, from the open files."""
        text = os.pread(self._limit_fd, 64, 0).strip()
        if self._version == 2:
            return None if text == b"max" else int(text)
        limit = int(text)
        # A parent's limit binds too (use_hierarchy): memory.stat reports the tightest one.
        hierarchical = _stat_field(
            os.pread(self._stat_fd, 65536, 0), b"\nhierarchical_memory_limit "
        )
        if hierarchical:
            limit = min(limit, hierarchical)
        return None if limit >= V1_UNLIMITED else limit

    def _inactive_file(self, stat: bytes) -> int:
        return _stat_field(stat, self._inactive_key)

    def close(self) -> None:
        for fd in self._fds:
            with suppress(OSError):
                os.close(fd)
        self._fds = []


def _stat_field(stat: bytes, key: bytes) -> int:
    """The value of one memory.stat field (`key` is b"\\nname "); 0 when absent."""
    text = b"\n" + stat
    start = text.find(key)
    if start < 0:
        return 0
    start += len(key)
    end = text.find(b"\n", start)
    return int(text[start : end if end >= 0 else len(text)])
