"""The project's bounded reader (sidecar/heapprofile.py) for the CLI: a refused profile becomes
a CliError naming the reason, so no input reaches the operator as a traceback."""

from dataclasses import asdict
from typing import Any

from oomdump.cli.errors import NOT_A_PROFILE, CliError
from sidecar import heapprofile

SAMPLE_INDEXES = ("inuse_space", "alloc_space")


def read(data: bytes, name: str) -> heapprofile.HeapProfile:
    try:
        return heapprofile.read(data, sample_types=SAMPLE_INDEXES)
    except heapprofile.ProfileError as error:
        why = error.reason if error.detail == error.reason else f"{error.reason}: {error.detail}"
        raise CliError(
            NOT_A_PROFILE, f"{name} is not a heap profile oomdump can read: {why}"
        ) from None


def _checked(heap: heapprofile.HeapProfile, name: str, sample_index: str) -> None:
    if sample_index not in heap.flat:
        raise CliError(
            NOT_A_PROFILE,
            f"{name} has no {sample_index} samples "
            f"(its sample types: {', '.join(heap.sample_types) or 'none'})",
        )


def total(heap: heapprofile.HeapProfile, sample_index: str) -> int:
    return heap.totals[sample_index]


def top(
    heap: heapprofile.HeapProfile, name: str, sample_index: str, n: int, by_cum: bool
) -> list[heapprofile.FunctionShare]:
    _checked(heap, name, sample_index)
    return heapprofile.top(heap, sample_index, n=n, by="cum" if by_cum else "flat")


def growth(
    before: heapprofile.HeapProfile,
    after: heapprofile.HeapProfile,
    names: tuple[str, str],
    sample_index: str,
    n: int,
) -> list[heapprofile.Growth]:
    _checked(before, names[0], sample_index)
    _checked(after, names[1], sample_index)
    return heapprofile.growth(before, after, n=n, sample_type=sample_index)


def top_rows(data: bytes, n: int, name: str = "the profile") -> list[dict[str, Any]]:
    """The top `n` by inuse_space as JSON rows, the shape a watcher writes into `.json`."""
    heap = read(data, name)
    return [asdict(row) for row in top(heap, name, "inuse_space", n, by_cum=False)]
