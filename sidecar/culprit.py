"""Name the leak: the top functions of a saved heap profile by `inuse_space`, read with the
project's own bounded reader (`sidecar.heapprofile`), after the race (the profile is on
disk first). The limits are tighter than the reader's defaults: the watcher reads while
other processes may be racing their kill, so one read holds the interpreter briefly.
"""

from dataclasses import asdict, dataclass, replace
from typing import Any

from sidecar import heapprofile

TOP = 3
WATCHER_LIMITS = replace(
    heapprofile.DEFAULT,
    uncompressed_bytes=8 * 1024 * 1024,
    seconds=0.5,
)


# A profile kept for the next capture's growth names at most this many functions, so what
# the watcher keeps per process stays small whatever the app sends.
KEEP_FUNCTIONS = 10_000


@dataclass(frozen=True)
class Reading:
    top: list[dict[str, Any]]  # the top functions by flat in-use bytes, as metadata has them
    error: str | None  # why the profile could not be read within the limits
    heap: heapprofile.HeapProfile | None  # kept for the next capture's growth, when small


def read(data: bytes, n: int = TOP) -> Reading:
    try:
        heap = heapprofile.read(data, WATCHER_LIMITS, sample_types=("inuse_space",))
        rows = heapprofile.top(heap, "inuse_space", n)
    except heapprofile.ProfileError as error:
        return Reading([], f"{error.reason}: {error.detail}", None)
    kept = heap if len(heap.names) <= KEEP_FUNCTIONS else None
    return Reading([asdict(row) for row in rows if row.flat_bytes > 0], None, kept)


def growth(
    before: heapprofile.HeapProfile, after: heapprofile.HeapProfile, n: int = TOP
) -> list[dict[str, Any]]:
    """What grew most between two captures of one process (flat in-use bytes)."""
    return [asdict(row) for row in heapprofile.growth(before, after, n)]


def describe(top: list[dict[str, Any]]) -> str:
    """`main.leak 181Mi (94%), main.cache 8Mi (4%)` for logs and Events."""
    return ", ".join(
        f"{row['name']} {_mib(row['flat_bytes'])} ({100 * row['flat_share']:.0f}%)" for row in top
    )


def describe_growth(rows: list[dict[str, Any]]) -> str:
    """`main.leak +120Mi, main.cache +2Mi`."""
    return ", ".join(f"{row['name']} +{_mib(row['delta_bytes'])}" for row in rows)


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f}Mi" if size >= 2**20 else f"{size / 1024:.0f}Ki"
