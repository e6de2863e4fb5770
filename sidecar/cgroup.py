"""A process's memory cgroup: where it is, and how full it is.

The cgroup is resolved from /proc/<pid>/cgroup and /proc/<pid>/mountinfo, and its files are
reached through /proc/<pid>/root, so the watcher sees the cgroupfs exactly as the process's
container mounts it; the folder is opened once and held (`sidecar.cgroupfs`), since what
that path means is the app's to change. Both files show cgroup paths relative to the
*reader's* cgroup namespace; the mountinfo `root` field says which cgroup the mount's top
is. The process's folder is the mount point plus its cgroup path relative to that root.
When the mount's root is not an ancestor (a cgroup namespace whose `0::/` view the mount
does not share) the mount point itself is the process's cgroup.
"""

import os
import posixpath
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from sidecar.cgroupfs import CgroupDir
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
    folder: CgroupDir  # held open; every file of the group is opened through it

    @property
    def usage_file(self) -> str:
        return "memory.usage_in_bytes" if self.version == 1 else "memory.current"

    @property
    def limit_file(self) -> str:
        return "memory.limit_in_bytes" if self.version == 1 else "memory.max"

    def close(self) -> None:
        self.folder.close()


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


def _components(path: str) -> list[str]:
    # `..` stays a component: a path outside the reader's cgroup namespace starts with it
    # (`/../ctr`), and normalising it away would name another group.
    return [part for part in path.split("/") if part not in ("", ".")]


def _relative(path: str, root: str) -> str | None:
    """`path` below `root` ('' when equal), or None when `root` is not an ancestor."""
    parts, root_parts = _components(path), _components(root)
    if parts[: len(root_parts)] != root_parts:
        return None
    return "/".join(parts[len(root_parts) :])


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
        mount, rel = max(inside, key=lambda pair: len(_components(pair[0].root)))
        return mount.mount_point, rel
    if not _components(path):
        # The process sits at the root of the reader's cgroup namespace, which its own
        # mount names from another namespace: the mount point is its group.
        return candidates[0].mount_point, ""
    raise CgroupError(
        f"cgroup {path} is outside every {'memory' if version == 1 else 'cgroup2'} mount "
        "the process has (its group lies outside the watcher's cgroup namespace and the "
        "process's view): not resolved, so no other group is taken for it"
    )


def resolve(proc_root: Path, pid: int) -> MemoryCgroup:
    """The memory cgroup of `pid`, its folder held open; CgroupError (or FileNotFoundError
    if it vanished). /proc/<pid>/cgroup and mountinfo are the kernel's; the folder path is
    walked beneath the process's root without following any link."""
    base = proc_root / str(pid)
    try:
        version, path = parse_cgroup_file(_read_bounded(base / "cgroup"))
        mounts = parse_mountinfo(_read_bounded(base / "mountinfo"))
    except FileNotFoundError:
        raise
    except OSError as error:
        raise CgroupError(f"cannot read {error.filename}: {error.strerror}") from error
    mount_point, rel = locate(version, path, mounts)
    where = posixpath.join(mount_point, rel) if rel else mount_point
    try:
        root_fd = os.open(base / "root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise CgroupError(f"cannot open {base / 'root'}: {error.strerror}") from error
    try:
        folder = CgroupDir.beneath(root_fd, where, path)
    except FileNotFoundError:
        raise CgroupError(f"{where} does not exist in the process's root (cgroup {path})") from None
    except OSError as error:
        raise CgroupError(f"{where} in the process's root is unsafe: {error.strerror}") from None
    finally:
        os.close(root_fd)
    resolved = MemoryCgroup(version=version, path=path, folder=folder)
    if not folder.has(resolved.usage_file):
        folder.close()
        raise CgroupError(f"{where}/{resolved.usage_file} is missing (cgroup {path}, v{version})")
    return resolved


MOUNTINFO_MAX = 4 * 1024 * 1024  # far above a container's mount table


def _read_bounded(path: Path, limit: int = MOUNTINFO_MAX) -> str:
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise CgroupError(f"{path} is larger than {limit} bytes")
    return data.decode(errors="replace")


def oom_kills(group: MemoryCgroup) -> int | None:
    """How many processes the kernel OOM-killed in the group (v1 memory.oom_control, v2
    memory.events `oom_kill`); None when the group is gone or the kernel does not say."""
    name = "memory.oom_control" if group.version == 1 else "memory.events"
    try:
        text = group.folder.read(name, 4096)
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(b" ")
        if key == b"oom_kill" and value.strip().isdigit():
            return int(value)
    return None


class Sampler:
    """The one reader of a cgroup's memory files, many times a second: they are opened once
    through the held folder and re-read with pread, only the memory.stat field needed is
    picked out, and the limit is the caller's (re-read by the refresh, not on every sample).
    OSError once the cgroup is gone.

    memory.stat costs most of a sample (tens of lines formatted by the kernel), so with a
    threshold it is read only when raw usage reaches it: the working set (usage minus
    inactive_file) cannot exceed raw usage, so below the threshold raw usage decides alone.
    `stat_reads` counts the memory.stat reads."""

    def __init__(self, cgroup: MemoryCgroup, metric: MemoryMetric) -> None:
        self._inactive_key = (
            b"\ntotal_inactive_file " if cgroup.version == 1 else b"\ninactive_file "
        )
        self._version = cgroup.version
        self._working_set = metric == "working_set"
        self._fds: list[int] = []
        try:
            for name in (cgroup.usage_file, "memory.stat", cgroup.limit_file):
                self._fds.append(cgroup.folder.open(name))
        except OSError:
            self.close()
            raise
        self._usage_fd, self._stat_fd, self._limit_fd = self._fds
        self.stat_reads = 0

    def usage(self) -> int:
        """Raw usage (page cache included) now."""
        return int(os.pread(self._usage_fd, 64, 0))

    def sample(self, limit_bytes: int | None, threshold_bytes: int | None = None) -> MemorySample:
        """Usage now; with `threshold_bytes`, memory.stat is skipped while raw usage is below
        it (the sample then carries raw usage and inactive_file_bytes None)."""
        usage = self.usage()
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
        """The memory limit in bytes, None when unlimited."""
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
