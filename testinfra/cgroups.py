"""Real cgroup v1 memory limits for tests: make a child group, run processes in it, clean up.

    with memory_cgroup(256 * MiB) as group:
        app = group.spawn([binary, "-port", "0"])
        ...
        assert group.wait_for_oom_kill(deadline=10)

The group lives at /sys/fs/cgroup/memory/oomdump-test-<random>. On exit every task in it
is SIGKILLed and the directory removed, also when the test failed. `cgroup_v1_unavailable()`
says why real limits cannot be used here (not root, no v1 memory controller), and
`require_cgroup_v1()` turns that into a pytest skip.
"""

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
MEMORY_ROOT = Path("/sys/fs/cgroup/memory")

# Writes its own pid into the group, then becomes the command: no preexec_fn, which is
# unsafe when the test process runs threads.
_ENTER_AND_EXEC = 'echo $$ > "$0" && exec "$@"'


def cgroup_v1_unavailable() -> str | None:
    """Why real v1 memory limits cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create cgroup v1 memory groups"
    if not (MEMORY_ROOT / "memory.limit_in_bytes").is_file():
        return f"no cgroup v1 memory controller mounted at {MEMORY_ROOT}"
    if not os.access(MEMORY_ROOT, os.W_OK):
        return f"{MEMORY_ROOT} is not writable (read-only cgroupfs?)"
    return None


def require_cgroup_v1() -> None:
    """pytest.skip with the reason when real v1 memory limits cannot be used."""
    reason = cgroup_v1_unavailable()
    if reason is not None:
        import pytest

        pytest.skip(reason)


class MemoryCgroup:
    """A cgroup v1 memory child group owned by a test."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def name(self) -> str:
        return self.path.name

    def _read(self, filename: str) -> str:
        return (self.path / filename).read_text()

    def _write(self, filename: str, value: str) -> None:
        (self.path / filename).write_text(value)

    def set_limit(self, limit_bytes: int) -> None:
        self._write("memory.limit_in_bytes", str(limit_bytes))

    @property
    def limit_bytes(self) -> int:
        return int(self._read("memory.limit_in_bytes"))

    def usage_bytes(self) -> int:
        return int(self._read("memory.usage_in_bytes"))

    def stat(self, field: str) -> int:
        """One field of memory.stat (e.g. total_inactive_file); 0 when absent."""
        for line in self._read("memory.stat").splitlines():
            key, _, value = line.partition(" ")
            if key == field:
                return int(value)
        return 0

    def charge_page_cache(self, folder: Path, mib: int) -> Path:
        """Write `mib` MiB to a new file in `folder` from inside the group, so its page cache
        is charged here (inactive_file, part of usage, not of the working set). Removing
        the file drops it."""
        path = folder / f"oomdump-page-cache-{secrets.token_hex(4)}"
        writer = self.spawn(
            ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", "status=none"]
        )
        if writer.wait(60) != 0:
            path.unlink(missing_ok=True)
            raise RuntimeError(f"dd could not write {mib} MiB of page cache to {path}")
        return path

    def max_usage_bytes(self) -> int:
        return int(self._read("memory.max_usage_in_bytes"))

    def failcnt(self) -> int:
        return int(self._read("memory.failcnt"))

    def oom_control(self) -> dict[str, int]:
        """memory.oom_control as a dict: oom_kill_disable, under_oom, oom_kill (newer kernels)."""
        fields: dict[str, int] = {}
        for line in self._read("memory.oom_control").splitlines():
            key, _, value = line.partition(" ")
            fields[key] = int(value)
        return fields

    def oom_kills(self) -> int:
        """Tasks the kernel OOM-killed in this group (memory.oom_control `oom_kill`)."""
        return self.oom_control().get("oom_kill", 0)

    def pids(self) -> list[int]:
        try:
            return [int(line) for line in self._read("cgroup.procs").split()]
        except FileNotFoundError:
            return []

    def add(self, pid: int) -> None:
        """Move an existing process into the group."""
        self._write("cgroup.procs", str(pid))

    def spawn(self, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside the group (in a session of its own, so it can be killed as a
        process group). Extra keyword arguments go to subprocess.Popen."""
        popen_kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(
            ["/bin/sh", "-c", _ENTER_AND_EXEC, str(self.path / "cgroup.procs"), *argv],
            **popen_kwargs,
        )

    def wait_for_oom_kill(self, deadline: float) -> bool:
        """True once the kernel has OOM-killed a task here, False after `deadline` seconds."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.oom_kills() > 0:
                return True
            time.sleep(0.01)
        return self.oom_kills() > 0

    def kill_all(self, deadline: float = 10.0) -> None:
        """SIGKILL every task until the group is empty; RuntimeError after `deadline` seconds."""
        end = time.monotonic() + deadline
        while pids := self.pids():
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > end:
                raise RuntimeError(f"cgroup {self.path} still holds tasks {pids}")
            time.sleep(0.01)


@contextmanager
def memory_cgroup(limit_bytes: int, prefix: str = "oomdump-test") -> Iterator[MemoryCgroup]:
    """A fresh cgroup v1 memory group limited to `limit_bytes`, removed on exit."""
    reason = cgroup_v1_unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    path = MEMORY_ROOT / f"{prefix}-{secrets.token_hex(4)}"
    path.mkdir()
    group = MemoryCgroup(path)
    try:
        # No swap here would make the limit soft: keep anonymous memory in RAM.
        swappiness = path / "memory.swappiness"
        if swappiness.exists():
            swappiness.write_text("0")
        group.set_limit(limit_bytes)
        yield group
    finally:
        try:
            group.kill_all()
        finally:
            _remove(path)


def remove_group(path: Path, deadline: float = 10.0) -> None:
    """Kill what is left in the group at `path` and remove it (a group a test made by hand)."""
    if not path.exists():
        return
    MemoryCgroup(path).kill_all(deadline)
    _remove(path, deadline)


def _remove(path: Path, deadline: float = 10.0) -> None:
    # rmdir answers EBUSY for a moment after the last task died; retry until the deadline.
    end = time.monotonic() + deadline
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.02)
