"""Name the leak: the top functions of a saved heap profile by `inuse_space`, read with the
project's own bounded reader (`sidecar.heapprofile`), after the race (the profile is on
disk first). The limits are tighter than the reader's defaults: the watcher reads while
other processes may be racing their kill, so one read holds the interpreter briefly.
"""

from dataclasses import asdict, replace
from typing import Any

from sidecar import heapprofile

TOP = 3
WATCHER_LIMITS = replace(
    heapprofile.DEFAULT,
    uncompressed_bytes=8 * 1024 * 1024,
    seconds=0.5,
)


def top_functions(data: bytes, n: int = TOP) -> tuple[list[dict[str, Any]], str | None]:
    """The top `n` functions by flat in-use bytes, as metadata records them, and None; or
    [] and the reader's reason when the profile cannot be read within the limits."""
    try:
        heap = heapprofile.read(data, WATCHER_LIMITS, sample_types=("inuse_space",))
        rows = heapprofile.top(heap, "inuse_space", n)
    except heapprofile.ProfileError as error:
        return [], f"{error.reason}: {error.detail}"
    return [asdict(row) for row in rows if row.flat_bytes > 0], None


def describe(top: list[dict[str, Any]]) -> str:
    """`main.leak 181Mi (94%), main.cache 8Mi (4%)` for logs and Events."""
    return ", ".join(
        f"{row['name']} {_mib(row['flat_bytes'])} ({100 * row['flat_share']:.0f}%)" for row in top
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f}Mi" if size >= 2**20 else f"{size / 1024:.0f}Ki"
