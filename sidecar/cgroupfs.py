"""A cgroup folder opened once, and every file beneath it opened through that descriptor.

The watcher is root beside an application that may be hostile. The app's cgroup is reached
through `/proc/<pid>/root`, whose meaning the app changes at will (`chroot`, symlinks,
FIFOs in a folder it owns). So the folder is resolved once: each path component is opened
beneath the process's root with no symlink followed (`openat2` RESOLVE_BENEATH |
RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS, or a component-by-component `O_NOFOLLOW` walk
where the kernel lacks `openat2`), and the folder must be on a cgroup filesystem
(`fstatfs`). After that, files are opened by plain name relative to the held descriptor,
never across a mount, never through a link, never blocking, and only when they are regular
files; "is this the same group" compares (device, inode), never paths.
"""

import ctypes
import errno
import os
import stat
import threading
from collections.abc import Callable, Mapping

# statfs f_type of the filesystems a cgroup folder may live on (linux/magic.h).
CGROUP_SUPER_MAGIC = 0x27E0EB
CGROUP2_SUPER_MAGIC = 0x63677270
CGROUP_FILESYSTEMS: Mapping[int, str] = {
    CGROUP_SUPER_MAGIC: "cgroup",
    CGROUP2_SUPER_MAGIC: "cgroup2",
}
# Tests that read prepared file trees (cases no kernel here can produce) add their
# filesystem here, and say so; the watcher itself accepts only the two above.
ACCEPTED_FILESYSTEMS: dict[int, str] = dict(CGROUP_FILESYSTEMS)

_SYS_OPENAT2 = 437  # x86_64 and arm64 share it (asm-generic numbering since 5.6)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_NO_LINKS = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_openat2_works = True  # False once the kernel said ENOSYS (before 5.6)


class UnsafeCgroup(OSError):
    """The path does not lead to a cgroup folder without links, mounts or special files."""


def _openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int | None:
    """openat2(2); None when the kernel does not have it."""
    global _openat2_works
    if not _openat2_works:
        return None
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    fd = _libc.syscall(
        _SYS_OPENAT2, dir_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how)
    )
    if fd >= 0:
        return int(fd)
    code = ctypes.get_errno()
    if code == errno.ENOSYS:
        _openat2_works = False
        return None
    raise OSError(code, os.strerror(code), path)


def _walk_nofollow(dir_fd: int, path: str) -> int:
    """Open `path` beneath `dir_fd` one component at a time, refusing links and `..`."""
    current = os.dup(dir_fd)
    try:
        for part in path.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                raise UnsafeCgroup(errno.EXDEV, "'..' in a cgroup path", path)
            following = os.open(
                part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current
            )
            os.close(current)
            current = following
    except BaseException:
        os.close(current)
        raise
    return current


def open_folder_beneath(root_fd: int, path: str) -> int:
    """An O_PATH descriptor of the folder `path` beneath `root_fd`, no link followed."""
    relative = path.strip("/") or "."
    if ".." in relative.split("/"):
        raise UnsafeCgroup(errno.EXDEV, "'..' in a cgroup path", path)
    fd = _openat2(root_fd, relative, os.O_PATH | os.O_DIRECTORY, _NO_LINKS)
    return fd if fd is not None else _walk_nofollow(root_fd, relative)


def filesystem_magic(fd: int) -> int:
    """statfs f_type of the filesystem `fd` lives on."""
    buffer = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if _libc.fstatfs(fd, buffer) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return ctypes.c_long.from_buffer(buffer).value


class CgroupDir:
    """One cgroup folder, held open; its files are opened by name through it.

    Equal when the folder is the same (device, inode). Closing is safe while other threads
    use it: an open after `close` fails with EBADF instead of reaching a reused fd number."""

    def __init__(self, fd: int, label: str) -> None:
        info = os.fstat(fd)
        if not stat.S_ISDIR(info.st_mode):
            os.close(fd)
            raise UnsafeCgroup(errno.ENOTDIR, "not a folder", label)
        try:
            magic = filesystem_magic(fd)
        except OSError:
            os.close(fd)
            raise
        if magic not in ACCEPTED_FILESYSTEMS:
            os.close(fd)
            raise UnsafeCgroup(
                errno.EXDEV, f"not on a cgroup filesystem (statfs type {magic:#x})", label
            )
        self._fd = fd
        self.label = label  # for logs: the cgroup path as /proc/<pid>/cgroup names it
        self.filesystem = ACCEPTED_FILESYSTEMS[magic]
        self.identity = (info.st_dev, info.st_ino)
        self._lock = threading.Lock()

    @classmethod
    def beneath(cls, root_fd: int, path: str, label: str) -> "CgroupDir":
        """The folder `path` beneath the (process root) folder `root_fd`."""
        return cls(open_folder_beneath(root_fd, path), label)

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> "CgroupDir":
        """A folder the watcher names itself (its own cgroupfs; tests' groups)."""
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return cls(fd, os.fspath(path))

    def open(self, name: str, write: bool = False) -> int:
        """A descriptor of the regular file `name` in this folder (no link, no mount
        crossed, never blocking on a FIFO); the caller closes it."""
        if not name or "/" in name or name in (".", ".."):
            raise UnsafeCgroup(errno.EINVAL, "not a plain file name", name)
        # O_TRUNC as a shell redirection does: ignored by cgroupfs, needed by prepared trees.
        flags = (os.O_WRONLY | os.O_TRUNC if write else os.O_RDONLY) | os.O_NONBLOCK | os.O_NOFOLLOW
        with self._lock:
            if self._fd < 0:
                raise OSError(errno.EBADF, "cgroup folder closed", f"{self.label}/{name}")
            fd = _openat2(self._fd, name, flags, _NO_LINKS | RESOLVE_NO_XDEV)
            if fd is None:
                fd = os.open(name, flags | os.O_CLOEXEC, dir_fd=self._fd)
                if os.fstat(fd).st_dev != self.identity[0]:
                    os.close(fd)
                    raise UnsafeCgroup(errno.EXDEV, "a mount over a cgroup file", name)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafeCgroup(errno.EINVAL, "not a regular file", f"{self.label}/{name}")
        return fd

    def has(self, name: str) -> bool:
        try:
            os.close(self.open(name))
        except OSError:
            return False
        return True

    def read(self, name: str, limit: int = 65536) -> bytes:
        """At most `limit` bytes of `name` (cgroup files are a few lines)."""
        fd = self.open(name)
        try:
            return os.pread(fd, limit, 0)
        finally:
            os.close(fd)

    def write(self, name: str, text: str) -> None:
        """Write `text` (always formatted by the watcher) to `name` in one write."""
        fd = self.open(name, write=True)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def watch_file(self, name: str, add: Callable[[str], int]) -> int:
        """`add(path)` with a path of `name` that resolves through the held descriptor
        (/proc/self/fd/N/name), for interfaces that take paths only (inotify)."""
        if not name or "/" in name or name in (".", ".."):
            raise UnsafeCgroup(errno.EINVAL, "not a plain file name", name)
        with self._lock:
            if self._fd < 0:
                raise OSError(errno.EBADF, "cgroup folder closed", f"{self.label}/{name}")
            return add(f"/proc/self/fd/{self._fd}/{name}")

    def is_open(self) -> bool:
        return self._fd >= 0

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CgroupDir) and other.identity == self.identity

    def __hash__(self) -> int:
        return hash(self.identity)

    def __repr__(self) -> str:
        return f"CgroupDir({self.label!r}, {self.filesystem})"

    def __str__(self) -> str:
        return self.label
