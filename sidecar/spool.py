"""The local spool in DUMP_DIR: every dump is written here first, atomically, then uploaded.

A dump is two files under DUMP_DIR at its object key: `<key>.pb.gz` (the profile) and
`<key>.json` (metadata), each written to a hidden temporary file and renamed into place,
profile first. Keys follow DESIGN.md:
`{S3_PREFIX}{namespace}/{pod}/{YYYY-MM-DDTHH-MM-SS.mmmZ}-{comm}-{pid}-{port}.pb.gz`.
When a key is already taken (same millisecond, pid and port, e.g. a `?gc=1` fetch right after
the first, or a dump left by an earlier run), the timestamp moves on by one millisecond until
the key is free: the shape stays as documented and nothing is overwritten.

The spool is bounded (SPOOL_MAX_FILES dumps, SPOOL_MAX_BYTES bytes, profile and metadata
together): when full, a new dump is refused with SpoolFull and nothing already spooled is
deleted. Each port's fetch thread saves at once, so a save reserves its key, its file and its
bytes under the lock before writing, and usage counts those reservations: concurrent saves can
never pass a bound together. A failed write removes what it wrote and gives its reservation back.

Every part of a key is hostile input (S3_PREFIX and POD_NAME from the pod author, comm from the
app): components are sanitised (no '/', no control characters, no leading '.', so no '..' and
no hidden names), empty segments (a leading '/', '//') are dropped, and the final path is
resolved and checked to lie beneath DUMP_DIR before anything is written.
"""

import contextlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PROFILE_SUFFIX = ".pb.gz"
METADATA_SUFFIX = ".json"
_TEMP_PREFIX = ".tmp-"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# S3_PREFIX segments keep a few more characters that are common in prefixes and harmless in a
# local file name (e.g. `cluster=prod/`).
_UNSAFE_IN_PREFIX = re.compile(r"[^A-Za-z0-9._=+@,-]")


class SpoolFull(Exception):
    """The spool holds its maximum; the message says which bound was reached."""


class UnsafeKey(OSError):
    """A key whose local path would not lie beneath DUMP_DIR (e.g. through a planted symlink)."""


@dataclass(frozen=True)
class Dump:
    key: str  # object key of the profile (ends .pb.gz)
    profile_path: Path
    metadata_path: Path  # may be absent for a dump a crashed run left half-written

    @property
    def metadata_key(self) -> str:
        return self.key[: -len(PROFILE_SUFFIX)] + METADATA_SUFFIX


def safe_component(text: str, unsafe: re.Pattern[str] = _UNSAFE) -> str:
    """A key component: no '/', no spaces or control characters, no leading '.', never empty."""
    text = unsafe.sub("_", text)
    if text.startswith("."):
        text = "_" + text[1:]  # no '.', '..' or hidden (e.g. '.tmp-') names
    return text or "_"


def safe_key(key: str) -> str:
    """`key` as a relative path of safe segments: empty segments dropped, each sanitised."""
    segments = [s for s in key.split("/") if s]
    return "/".join(safe_component(s, _UNSAFE_IN_PREFIX) for s in segments)


def format_timestamp(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H-%M-%S.") + f"{moment.microsecond // 1000:03d}Z"


def object_key(
    prefix: str, namespace: str, pod: str, moment: datetime, comm: str, pid: int, port: int
) -> str:
    stamp = format_timestamp(moment)
    name = f"{stamp}-{safe_component(comm)}-{pid}-{port}{PROFILE_SUFFIX}"
    return safe_key(f"{prefix}{safe_component(namespace)}/{safe_component(pod)}/{name}")


class Spool:
    def __init__(self, root: Path, max_files: int, max_bytes: int) -> None:
        self.root = root
        self._max_files = max_files
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._taken: set[str] = set()  # keys handed out by this run (survive upload)
        self._reserved: dict[str, int] = {}  # key -> bytes, for saves being written now

    def prepare(self) -> list[str]:
        """Create DUMP_DIR and remove temporaries a crashed run left; returns what it removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        removed: list[str] = []
        for path in self.root.rglob(f"{_TEMP_PREFIX}*"):
            path.unlink(missing_ok=True)
            removed.append(str(path))
        return removed

    def dumps(self) -> Iterator[Dump]:
        """Every complete profile in the spool, oldest key first."""
        profiles = sorted(
            p for p in self.root.rglob(f"*{PROFILE_SUFFIX}") if not p.name.startswith(_TEMP_PREFIX)
        )
        for path in profiles:
            key = path.relative_to(self.root).as_posix()
            metadata = path.with_name(path.name[: -len(PROFILE_SUFFIX)] + METADATA_SUFFIX)
            yield Dump(key, path, metadata)

    def usage(self) -> tuple[int, int]:
        """(dumps, bytes) in the spool now, counting saves in progress at their full size."""
        with self._lock:
            return self._usage()

    def _usage(self) -> tuple[int, int]:
        count = len(self._reserved)
        size = sum(self._reserved.values())
        for dump in self.dumps():
            if dump.key in self._reserved:
                continue  # partly written: counted by its reservation
            count += 1
            for path in (dump.profile_path, dump.metadata_path):
                with contextlib.suppress(FileNotFoundError):
                    size += path.stat().st_size
        return count, size

    def _claim(
        self,
        prefix: str,
        namespace: str,
        pod: str,
        moment: datetime,
        comm: str,
        pid: int,
        port: int,
    ) -> str:
        while True:
            key = object_key(prefix, namespace, pod, moment, comm, pid, port)
            if key not in self._taken and not (self.root / key).exists():
                self._taken.add(key)
                return key
            moment += timedelta(milliseconds=1)

    def save(
        self,
        profile: bytes,
        metadata: dict[str, Any],
        *,
        prefix: str,
        namespace: str,
        pod: str,
        moment: datetime,
        comm: str,
        pid: int,
        port: int,
    ) -> Dump:
        """Write one dump atomically; SpoolFull when a bound would be passed."""
        with self._lock:
            key = self._claim(prefix, namespace, pod, moment, comm, pid, port)
            document = json.dumps({**metadata, "key": key}, indent=1, sort_keys=True).encode()
            need = len(profile) + len(document)
            count, size = self._usage()
            if count + 1 > self._max_files:
                raise SpoolFull(f"spool holds {count} dumps (SPOOL_MAX_FILES={self._max_files})")
            if size + need > self._max_bytes:
                raise SpoolFull(
                    f"spool holds {size} bytes, +{need} > SPOOL_MAX_BYTES={self._max_bytes}"
                )
            self._reserved[key] = need
        profile_path = self.root / key
        metadata_path = profile_path.with_name(
            profile_path.name[: -len(PROFILE_SUFFIX)] + METADATA_SUFFIX
        )
        try:
            self._check_beneath(profile_path)
            _write_dump(profile_path, profile, metadata_path, document)
        finally:
            with self._lock:
                del self._reserved[key]
        return Dump(key, profile_path, metadata_path)

    def annotate(self, dump: Dump, extra: dict[str, Any]) -> None:
        """Add `extra` to a saved dump's metadata (atomically; before it is uploaded)."""
        document = json.loads(dump.metadata_path.read_bytes())
        document.update(extra)
        _write_atomic(dump.metadata_path, json.dumps(document, indent=1, sort_keys=True).encode())

    def _check_beneath(self, path: Path) -> None:
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):
            raise UnsafeKey(f"{path} resolves outside DUMP_DIR {root}")


def _write_dump(profile_path: Path, profile: bytes, metadata_path: Path, document: bytes) -> None:
    try:
        profile_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(profile_path, profile)
        _write_atomic(metadata_path, document)
    except BaseException:
        # Nothing half-saved stays behind: the refusal is logged and the space is free again.
        profile_path.unlink(missing_ok=True)
        metadata_path.unlink(missing_ok=True)
        raise


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f"{_TEMP_PREFIX}{path.name}")
    try:
        # O_NOFOLLOW|O_EXCL: the temporary is a new regular file, never a link's target.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        descriptor = os.open(temporary, flags, 0o600)
        with open(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
