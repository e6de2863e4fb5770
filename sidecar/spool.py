"""The local spool in DUMP_DIR: every dump is written here first, atomically, then uploaded.

A dump is two files under DUMP_DIR at its object key: `<key>.pb.gz` (the profile) and
`<key>.json` (metadata), each written to a hidden temporary file and renamed into place,
profile first. Keys follow DESIGN.md:
`{S3_PREFIX}{namespace}/{pod}/{YYYY-MM-DDTHH-MM-SS.mmmZ}-{comm}-{pid}-{port}.pb.gz`.
When a key is already taken (same millisecond, pid and port, e.g. a `?gc=1` fetch right after
the first, or a dump left by an earlier run), the timestamp moves on by one millisecond until
the key is free: the shape stays as documented and nothing is overwritten.

The spool is bounded (SPOOL_MAX_FILES dumps, SPOOL_MAX_BYTES bytes): when full, a new dump
is refused with SpoolFull and nothing already spooled is deleted.
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


class SpoolFull(Exception):
    """The spool holds its maximum; the message says which bound was reached."""


@dataclass(frozen=True)
class Dump:
    key: str  # object key of the profile (ends .pb.gz)
    profile_path: Path
    metadata_path: Path  # may be absent for a dump a crashed run left half-written

    @property
    def metadata_key(self) -> str:
        return self.key[: -len(PROFILE_SUFFIX)] + METADATA_SUFFIX


def safe_component(text: str) -> str:
    """A key component: no '/', no spaces, never empty."""
    return _UNSAFE.sub("_", text) or "_"


def format_timestamp(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H-%M-%S.") + f"{moment.microsecond // 1000:03d}Z"


def object_key(
    prefix: str, namespace: str, pod: str, moment: datetime, comm: str, pid: int, port: int
) -> str:
    stamp = format_timestamp(moment)
    name = f"{stamp}-{safe_component(comm)}-{pid}-{port}{PROFILE_SUFFIX}"
    return f"{prefix}{safe_component(namespace)}/{safe_component(pod)}/{name}"


class Spool:
    def __init__(self, root: Path, max_files: int, max_bytes: int) -> None:
        self.root = root
        self._max_files = max_files
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._taken: set[str] = set()  # keys handed out by this run (survive upload)

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
        """(dumps, bytes) in the spool now."""
        count = 0
        size = 0
        for dump in self.dumps():
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
            count, size = self.usage()
            if count + 1 > self._max_files:
                raise SpoolFull(f"spool holds {count} dumps (SPOOL_MAX_FILES={self._max_files})")
            if size + len(profile) > self._max_bytes:
                raise SpoolFull(
                    f"spool holds {size} bytes, +{len(profile)} > SPOOL_MAX_BYTES={self._max_bytes}"
                )
            key = self._claim(prefix, namespace, pod, moment, comm, pid, port)
        profile_path = self.root / key
        profile_path.parent.mkdir(parents=True, exist_ok=True)
        metadata_path = profile_path.with_name(
            profile_path.name[: -len(PROFILE_SUFFIX)] + METADATA_SUFFIX
        )
        _write_atomic(profile_path, profile)
        document = {**metadata, "key": key}
        _write_atomic(metadata_path, json.dumps(document, indent=1, sort_keys=True).encode())
        return Dump(key, profile_path, metadata_path)


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f"{_TEMP_PREFIX}{path.name}")
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)
