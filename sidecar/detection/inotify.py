"""A minimal inotify binding (libc through ctypes): watch files for modification.

cgroup v2 signals a change of `memory.events` (`high`, `max`, `oom`, `oom_kill`) as a
file modification, which inotify reports; regular files written by tests report the same.
"""

import ctypes
import ctypes.util
import os
import struct
from pathlib import Path

IN_MODIFY = 0x00000002
IN_IGNORED = 0x00008000
IN_DONT_FOLLOW = 0x02000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class Inotify:
    """One inotify instance; `fd` is pollable, `read()` returns the watch descriptors that
    reported a modification since the last read."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"inotify_init1: {os.strerror(errno)}")
        self.fd: int = fd

    def add(self, path: str | Path) -> int:
        """Watch `path` for modification (a last component that is a link is refused);
        returns its watch descriptor (OSError says why not)."""
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), IN_MODIFY | IN_DONT_FOLLOW)
        if wd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"inotify_add_watch {path}: {os.strerror(errno)}")
        return int(wd)

    def remove(self, wd: int) -> None:
        _libc.inotify_rm_watch(self.fd, wd)  # fails harmlessly when the file is gone

    def read(self) -> set[int]:
        modified: set[int] = set()
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return modified
            offset = 0
            while offset + _EVENT_HEADER.size <= len(data):
                wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
                offset += _EVENT_HEADER.size + length
                if mask & IN_MODIFY:
                    modified.add(wd)

    def close(self) -> None:
        os.close(self.fd)
