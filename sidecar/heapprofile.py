"""Read a gzip'd pprof heap profile sent by an untrusted app: its top functions, and what grew
between two profiles of one process.

Every figure is bounded by `Limits` (inflated size, outer fields, one message's size, sample
types, samples, stack depth, frames, locations, functions, lines, strings, CPU seconds), and
anything wrong (a missing id, a duplicate or zero id, a string index out of range, a sample
whose values do not match the sample types, a malformed message) raises `ProfileError` with a
reason label and a detail. Nothing else escapes for any input.

Two passes over the inflated stream, which is inflated in chunks and never held whole: the
first keeps the tables that samples refer to (sample types, locations, functions, strings) in
compact arrays; the second aggregates each sample into per-function sums as it arrives, so no
sample is kept (Go writes samples before the tables they refer to). Mappings are skipped.
Figures follow `go tool pprof -top` at function granularity: flat goes to the first line of a
sample's first location (the innermost inlined function), cum to every function named in the
stack once per sample, functions are merged by name, and a share is a value over the sum of
the absolute values of all samples of that type.

The watcher imports this module at its first capture, not at start.
"""

import time
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sidecar import profile

_MASK64 = (1 << 64) - 1
_SIGN64 = 1 << 63
UNSYMBOLIZED = "[unsymbolized]"


@dataclass(frozen=True)
class Limits:
    """Caps on what a profile may hold. The defaults are far above real Go heap profiles (a
    program retaining from 16384 distinct stacks: 1.3 MiB inflated, 16 thousand samples,
    about 100 locations and 60 functions; Go records at most 128 frames a stack unless
    GODEBUG=profstackdepth raises it, to 1024 at most)."""

    uncompressed_bytes: int = profile.MAX_UNCOMPRESSED
    fields: int = profile.MAX_FIELDS  # outer fields of the Profile message
    message_bytes: int = 1024 * 1024  # one sample, location, function or sample type
    sample_types: int = 16
    samples: int = 500_000
    stack_depth: int = 1024
    frames: int = 8_000_000  # location references in all samples together
    locations: int = 200_000
    lines_per_location: int = 256
    lines: int = 1_000_000  # lines in all locations together
    functions: int = 100_000
    strings: int = 250_000
    string_bytes: int = 8 * 1024 * 1024
    seconds: float = 5.0  # CPU budget of one read (wall clock, checked in every loop)


DEFAULT = Limits()


class ProfileError(ValueError):
    """The profile is refused; `reason` is a short label (`too-large`, `missing-id`, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class HeapProfile:
    """Per-function sums of one profile, for the sample types that were aggregated."""

    sample_types: tuple[str, ...]  # every sample type in the profile, in order
    names: tuple[str, ...]  # every function named in a sample
    totals: dict[str, int] = field(default_factory=dict)  # type -> sum of |value|
    flat: dict[str, Sequence[int]] = field(default_factory=dict)  # type -> by name index
    cum: dict[str, Sequence[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class FunctionShare:
    name: str
    flat_bytes: int
    cum_bytes: int
    flat_share: float  # of the profile's total for the sample type
    cum_share: float


@dataclass(frozen=True)
class Growth:
    name: str
    before_bytes: int  # flat, in the earlier profile
    after_bytes: int
    delta_bytes: int
    delta_share: float  # of the earlier profile's total, as `go tool pprof -diff_base` shows


class _Clock:
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self._deadline:
            raise ProfileError("deadline", f"reading took more than {self._seconds:g} s")


def _cap(count: int, limit: int, reason: str, what: str) -> None:
    if count > limit:
        raise ProfileError(reason, f"more than {limit} {what}")


def _varint(buffer: bytes, position: int, what: str) -> tuple[int, int]:
    value = shift = 0
    end = min(position + 10, len(buffer))
    start = position
    while position < end:
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & _MASK64, position
        shift += 7
    problem = "varint longer than 10 bytes" if end - start == 10 else "truncated varint"
    raise ProfileError("bad-message", f"{what}: {problem}")


def _scan(buffer: bytes, what: str) -> list[tuple[int, int, int, int]]:
    """(number, wire type, value, start) of each field: a varint's value with start -1, or a
    payload's end offset with its start offset."""
    fields: list[tuple[int, int, int, int]] = []
    position = 0
    while position < len(buffer):
        tag, position = _varint(buffer, position, what)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, position = _varint(buffer, position, what)
            fields.append((number, 0, value, -1))
        elif wire_type == 2:
            length, position = _varint(buffer, position, what)
            if length > len(buffer) - position:
                raise ProfileError("bad-message", f"{what}: length runs past the end")
            fields.append((number, 2, position + length, position))
            position += length
        elif wire_type in (1, 5):
            position += 8 if wire_type == 1 else 4
            if position > len(buffer):
                raise ProfileError("bad-message", f"{what}: fixed field runs past the end")
        else:
            raise ProfileError("bad-message", f"{what}: field {number} wire type {wire_type}")
    return fields


def _repeated(
    buffer: bytes, fields: Iterable[tuple[int, int, int, int]], number: int, what: str
) -> list[int]:
    """The values of repeated varint field `number`, packed or not."""
    values: list[int] = []
    for field_number, wire_type, value, start in fields:
        if field_number != number:
            continue
        if wire_type == 0:
            values.append(value)
            continue
        packed = buffer[start:value]
        if not packed or max(packed) < 0x80:
            values.extend(packed)  # every varint is one byte: the common small-id case
            continue
        # Decoded inline (a call per varint costs more than the decoding).
        item = shift = 0
        for byte in packed:
            item |= (byte & 0x7F) << shift
            if byte < 0x80:
                values.append(item & _MASK64)
                item = shift = 0
            elif shift == 63:
                raise ProfileError("bad-message", f"{what}: varint longer than 10 bytes")
            else:
                shift += 7
        if shift:
            raise ProfileError("bad-message", f"{what}: truncated varint")
    return values


def _scalar(fields: Iterable[tuple[int, int, int, int]], number: int, what: str) -> int:
    value = 0
    for field_number, wire_type, field_value, _ in fields:
        if field_number == number:
            if wire_type != 0:
                raise ProfileError("bad-message", f"{what}: field {number} is not a varint")
            value = field_value
    return value


class _Index:
    """Ids (uint64) to dense indices: id - 1 when the ids are 1..n in order (as Go writes
    them), else a binary search over the sorted ids."""

    def __init__(self, ids: array, what: str) -> None:
        order: Sequence[int] | None = None
        if any(ids[i] >= ids[i + 1] for i in range(len(ids) - 1)):
            order = sorted(range(len(ids)), key=ids.__getitem__)
            ids = array("Q", (ids[i] for i in order))
        for i in range(len(ids) - 1):
            if ids[i] == ids[i + 1]:
                raise ProfileError("duplicate-id", f"{what} id {ids[i]} appears twice")
        if len(ids) and ids[0] == 0:
            raise ProfileError("bad-id", f"{what} id 0")
        self.dense = not ids or (order is None and ids[-1] == len(ids))
        self.count = len(ids)
        self._ids = ids
        self._order = None if order is None else array("L", order)
        self._what = what

    def __call__(self, ident: int, referrer: str) -> int:
        if self.dense and 0 < ident <= self.count:
            return ident - 1
        position = bisect_left(self._ids, ident)
        if position == len(self._ids) or self._ids[position] != ident:
            raise ProfileError(
                "missing-id", f"{referrer} refers to {self._what} {ident}, which is absent"
            )
        return position if self._order is None else self._order[position]


class _Tables:
    """What samples refer to, from the first pass."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.sample_types: list[int] = []  # string indices
        self.samples = 0
        self.strings = bytearray()
        self.string_ends = array("L")
        self.function_ids = array("Q")
        self.function_names = array("I")  # string indices (clamped: past any string cap)
        self.location_ids = array("Q")
        self.line_ends = array("L")  # per location: end of its lines in line_functions
        self.line_functions = array("Q")  # function ids, then (after resolve) name indices

    def string(self, index: int, referrer: str) -> str:
        if index >= len(self.string_ends):
            raise ProfileError(
                "bad-string", f"{referrer} names string {index} of {len(self.string_ends)}"
            )
        start = self.string_ends[index - 1] if index else 0
        return self.strings[start : self.string_ends[index]].decode("utf-8", "replace")

    def add_string(self, data: bytes) -> None:
        limits = self.limits
        _cap(len(self.string_ends) + 1, limits.strings, "too-many-strings", "strings")
        _cap(len(self.strings) + len(data), limits.string_bytes, "too-large", "string bytes")
        self.strings += data
        self.string_ends.append(len(self.strings))

    def add_location(self, buffer: bytes) -> None:
        limits = self.limits
        what = f"location {len(self.location_ids) + 1}"
        _cap(len(self.location_ids) + 1, limits.locations, "too-many-locations", "locations")
        fields = _scan(buffer, what)
        lines = [(value, start) for number, wire, value, start in fields if number == 4]
        _cap(len(lines), limits.lines_per_location, "too-many-lines", f"lines in {what}")
        _cap(len(self.line_functions) + len(lines), limits.lines, "too-many-lines", "lines")
        for end, start in lines:
            if start < 0:
                raise ProfileError("bad-message", f"{what}: line is not a message")
            line = buffer[start:end]
            self.line_functions.append(_scalar(_scan(line, what), 1, what))
        self.location_ids.append(_scalar(fields, 1, what))
        self.line_ends.append(len(self.line_functions))

    def add_function(self, buffer: bytes) -> None:
        what = f"function {len(self.function_ids) + 1}"
        _cap(len(self.function_ids) + 1, self.limits.functions, "too-many-functions", "functions")
        fields = _scan(buffer, what)
        self.function_ids.append(_scalar(fields, 1, what))
        self.function_names.append(min(_scalar(fields, 2, what), 0xFFFF_FFFF))

    def add_sample_type(self, buffer: bytes) -> None:
        what = "sample type"
        _cap(
            len(self.sample_types) + 1,
            self.limits.sample_types,
            "too-many-sample-types",
            "sample types",
        )
        self.sample_types.append(min(_scalar(_scan(buffer, what), 1, what), 0xFFFF_FFFF))


def _fields(
    data: bytes, limits: Limits, clock: _Clock
) -> Iterable[tuple[int, int, int, profile.Fields]]:
    """The outer fields of the inflated profile, with NotAProfile translated."""
    stream = profile.Fields(profile.inflate(data, limits.uncompressed_bytes))
    count = 0
    while True:
        try:
            item = stream.next()
        except profile.NotAProfile as error:
            reason, _, detail = str(error).partition(": ")
            raise ProfileError(reason, detail or reason) from None
        if item is None:
            return
        count += 1
        _cap(count, limits.fields, "too-large", "fields")
        if count % 256 == 0:
            clock.check()
        yield (*item, stream)


def _payload(stream: profile.Fields, number: int, wire_type: int, length: int, cap: int) -> bytes:
    if wire_type != 2:
        raise ProfileError("bad-message", f"field {number} is not a message")
    _cap(length, cap, "too-large", f"bytes in one field {number}")
    try:
        return stream.read(length)
    except profile.NotAProfile as error:
        reason, _, detail = str(error).partition(": ")
        raise ProfileError(reason, detail or reason) from None


def _skip(stream: profile.Fields, wire_type: int, length: int) -> None:
    if wire_type != 0:
        try:
            stream.skip(length)
        except profile.NotAProfile as error:
            reason, _, detail = str(error).partition(": ")
            raise ProfileError(reason, detail or reason) from None


def _first_pass(data: bytes, limits: Limits, clock: _Clock) -> _Tables:
    tables = _Tables(limits)
    readers = {1: tables.add_sample_type, 4: tables.add_location, 5: tables.add_function}
    for number, wire_type, value, stream in _fields(data, limits, clock):
        if number in readers:
            readers[number](_payload(stream, number, wire_type, value, limits.message_bytes))
        elif number == 6:
            tables.add_string(_payload(stream, number, wire_type, value, limits.string_bytes))
        elif number == 2:
            tables.samples += 1
            _cap(tables.samples, limits.samples, "too-many-samples", "samples")
            if wire_type != 2:
                raise ProfileError("bad-message", "field 2 is not a message")
            _cap(value, limits.message_bytes, "too-large", "bytes in one field 2")
            _skip(stream, wire_type, value)
        else:
            _skip(stream, wire_type, value)
    if not tables.sample_types:
        raise ProfileError("no-sample-type", "the profile declares no sample type")
    return tables


class _Resolved:
    """Locations as runs of name indices (functions merged by name), ready for samples."""

    def __init__(self, tables: _Tables, clock: _Clock) -> None:
        function_index = _Index(tables.function_ids, "function")
        self.names: list[str] = []
        by_name: dict[str, int] = {}
        name_of_function = array("I")
        for position, string in enumerate(tables.function_names):
            name = tables.string(string, f"function {tables.function_ids[position]}")
            name_of_function.append(by_name.setdefault(name, len(by_name)))
            if len(by_name) > len(self.names):
                self.names.append(name)
        self.unsymbolized = len(self.names)
        self.names.append(UNSYMBOLIZED)
        lines = tables.line_functions
        ends = tables.line_ends
        for location in range(len(tables.location_ids)):
            if location % 1024 == 0:
                clock.check()
            referrer = f"location {tables.location_ids[location]}"
            for line in range(ends[location - 1] if location else 0, ends[location]):
                lines[line] = name_of_function[function_index(lines[line], referrer)]
        self.location_index = _Index(tables.location_ids, "location")
        self.lines = lines
        self.ends = ends
        # By location id when ids are dense (as Go writes them): the one name of a location
        # with exactly one line, else -1; slot 0 is -1 (id 0 is never valid). Most locations
        # have one line, so most stacks resolve in C (map over this array).
        self.single = array("q", [-1])
        if self.location_index.dense:
            for location in range(len(ends)):
                start = ends[location - 1] if location else 0
                self.single.append(lines[start] if ends[location] - start == 1 else -1)


def _second_pass(
    data: bytes,
    limits: Limits,
    clock: _Clock,
    tables: _Tables,
    resolved: _Resolved,
    wanted: list[int],
) -> tuple[list[int], list[array], list[array]]:
    count = len(resolved.names)
    totals = [0] * len(wanted)
    flat = [array("q", bytes(8 * count)) for _ in wanted]
    cum = [array("q", bytes(8 * count)) for _ in wanted]
    types = len(tables.sample_types)
    frames = 0
    sample = 0
    lookup, lines, ends = resolved.location_index, resolved.lines, resolved.ends
    dense, located, single = lookup.dense, lookup.count, resolved.single
    for number, wire_type, value, stream in _fields(data, limits, clock):
        if number != 2:
            _skip(stream, wire_type, value)
            continue
        sample += 1
        clock.check()
        what = f"sample {sample}"
        buffer = _payload(stream, number, wire_type, value, limits.message_bytes)
        fields = _scan(buffer, what)
        locations = _repeated(buffer, fields, 1, what)
        values = _repeated(buffer, fields, 2, what)
        if len(values) != types:
            raise ProfileError("bad-sample", f"{what} has {len(values)} values for {types} types")
        _cap(len(locations), limits.stack_depth, "too-deep", f"frames in {what}")
        frames += len(locations)
        _cap(frames, limits.frames, "too-many-frames", "frames in all samples")
        if dense and locations and max(locations) <= located:
            singles = list(map(single.__getitem__, locations))
            if -1 not in singles:
                _add(totals, flat, cum, wanted, values, singles[0], set(singles))
                continue
        leaf = -1  # a sample without locations counts in the total only
        named: set[int] = set()
        for depth, ident in enumerate(locations):
            location = ident - 1 if dense and 0 < ident <= located else lookup(ident, what)
            start = ends[location - 1] if location else 0
            end = ends[location]
            if end == start:
                named.add(resolved.unsymbolized)
            named.update(lines[start:end])
            if depth == 0:
                leaf = lines[start] if end > start else resolved.unsymbolized
        _add(totals, flat, cum, wanted, values, leaf, named)
    return totals, flat, cum


def _add(
    totals: list[int],
    flat: list[array],
    cum: list[array],
    wanted: list[int],
    values: list[int],
    leaf: int,
    named: set[int],
) -> None:
    """Add one sample's values (uint64 as sent, read as int64) to the sums."""
    for slot, type_index in enumerate(wanted):
        amount = values[type_index]
        if amount & _SIGN64:
            amount -= 1 << 64
        totals[slot] += abs(amount)
        if leaf >= 0:
            flat[slot][leaf] += amount
        for name in named:
            cum[slot][name] += amount


def read(
    data: bytes,
    limits: Limits = DEFAULT,
    sample_types: tuple[str, ...] = ("inuse_space", "alloc_space"),
) -> HeapProfile:
    """The per-function sums of a gzip'd pprof profile for those of `sample_types` it has."""
    clock = _Clock(limits.seconds)
    tables = _first_pass(data, limits, clock)
    type_names = tuple(tables.string(i, "sample type") for i in tables.sample_types)
    resolved = _Resolved(tables, clock)
    # The first sample type of each wanted name (a hostile profile may repeat one).
    wanted = [
        i
        for i, name in enumerate(type_names)
        if name in sample_types and type_names.index(name) == i
    ]
    totals, flat, cum = _second_pass(data, limits, clock, tables, resolved, wanted)
    names = [type_names[i] for i in wanted]
    return HeapProfile(
        sample_types=type_names,
        names=tuple(resolved.names),
        totals=dict(zip(names, totals, strict=True)),
        flat=dict(zip(names, flat, strict=True)),
        cum=dict(zip(names, cum, strict=True)),
    )


def _values(heap: HeapProfile, sample_type: str) -> tuple[Sequence[int], Sequence[int], int]:
    if sample_type not in heap.flat:
        raise ProfileError(
            "no-sample-type",
            f"{sample_type} was not read (profile has {', '.join(heap.sample_types)})",
        )
    return heap.flat[sample_type], heap.cum[sample_type], heap.totals[sample_type]


def _share(value: int, total: int) -> float:
    return value / total if total else 0.0


def table(heap: HeapProfile, sample_type: str = "inuse_space") -> list[FunctionShare]:
    """Every function with a nonzero flat or cum value, in `go tool pprof -top` order (flat,
    then name)."""
    flat, cum, total = _values(heap, sample_type)
    rows = [
        FunctionShare(name, flat[i], cum[i], _share(flat[i], total), _share(cum[i], total))
        for i, name in enumerate(heap.names)
        if flat[i] or cum[i]
    ]
    rows.sort(key=lambda r: (-abs(r.flat_bytes), r.name))
    return rows


def top(
    heap: HeapProfile, sample_type: str = "inuse_space", n: int = 3, by: str = "flat"
) -> list[FunctionShare]:
    """The `n` functions with most flat (or, with by="cum", cumulative) bytes."""
    rows = table(heap, sample_type)
    if by == "cum":
        rows.sort(key=lambda r: (-abs(r.cum_bytes), r.name))
    elif by != "flat":
        raise ValueError(f"by must be flat or cum, not {by!r}")
    return rows[:n]


def growth(
    before: HeapProfile, after: HeapProfile, n: int = 3, sample_type: str = "inuse_space"
) -> list[Growth]:
    """The `n` functions whose flat bytes grew most from `before` to `after`."""
    flat_before, _, total_before = _values(before, sample_type)
    flat_after, _, total_after = _values(after, sample_type)
    amounts: dict[str, list[int]] = {}
    for i, name in enumerate(before.names):
        if flat_before[i]:
            amounts.setdefault(name, [0, 0])[0] += flat_before[i]
    for i, name in enumerate(after.names):
        if flat_after[i]:
            amounts.setdefault(name, [0, 0])[1] += flat_after[i]
    base = total_before or total_after
    rows = [
        Growth(name, old, new, new - old, _share(new - old, base))
        for name, (old, new) in amounts.items()
        if new > old
    ]
    rows.sort(key=lambda r: (-r.delta_bytes, r.name))
    return rows[:n]
