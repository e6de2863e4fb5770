"""heapprofile against hand-built hostile profiles: each refused with its reason, within the
deadline and without memory that grows with what was sent."""

import gzip
import time
import tracemalloc
import zlib

import pytest

from sidecar import heapprofile
from sidecar.heapprofile import Limits, ProfileError
from testinfra.protobuf import message, number, varint

MIB = 1024 * 1024


def packed(field: int, values: list[int]) -> bytes:
    return message(field, b"".join(varint(v & (1 << 64) - 1) for v in values))


def sample(locations: list[int], values: list[int]) -> bytes:
    return message(2, packed(1, locations) + packed(2, values))


def location(ident: int, functions: list[int]) -> bytes:
    return message(4, number(1, ident) + b"".join(message(4, number(1, f)) for f in functions))


def function(ident: int, name: int) -> bytes:
    return message(5, number(1, ident) + number(2, name))


def strings(*texts: str) -> bytes:
    return b"".join(message(6, t.encode()) for t in texts)


# A well-formed profile: main.leak (called by main.main) holds 100 bytes, main.main 10.
STRINGS = strings("", "inuse_space", "bytes", "main.leak", "main.main")
SAMPLE_TYPE = message(1, number(1, 1) + number(2, 2))
TABLES = location(1, [1]) + location(2, [2]) + function(1, 3) + function(2, 4) + STRINGS


def profile(*parts: bytes) -> bytes:
    return gzip.compress(b"".join(parts))


def refused(data: bytes, reason: str, limits: Limits = heapprofile.DEFAULT) -> ProfileError:
    with pytest.raises(ProfileError) as caught:
        heapprofile.read(data, limits)
    assert caught.value.reason == reason, str(caught.value)
    return caught.value


def test_a_well_formed_profile_is_read() -> None:
    heap = heapprofile.read(profile(SAMPLE_TYPE, sample([1, 2], [100]), sample([2], [10]), TABLES))
    assert [(r.name, r.flat_bytes, r.cum_bytes) for r in heapprofile.table(heap)] == [
        ("main.leak", 100, 100),
        ("main.main", 10, 110),
    ]
    assert heapprofile.top(heap, n=1)[0].flat_share == pytest.approx(100 / 110)


def test_missing_ids_are_refused() -> None:
    error = refused(profile(SAMPLE_TYPE, sample([1, 9], [100]), TABLES), "missing-id")
    assert "location 9" in error.detail
    error = refused(profile(SAMPLE_TYPE, location(1, [7]), function(1, 3), STRINGS), "missing-id")
    assert "function 7" in error.detail


def test_bad_ids_and_strings_are_refused() -> None:
    refused(profile(SAMPLE_TYPE, location(1, [1]), TABLES), "duplicate-id")
    refused(profile(SAMPLE_TYPE, location(0, [1]), function(1, 3), STRINGS), "bad-id")
    refused(profile(SAMPLE_TYPE, location(1, [1]), function(1, 99), STRINGS), "bad-string")
    refused(profile(message(1, number(1, 50)), STRINGS), "bad-string")


def test_sparse_ids_in_any_order_resolve() -> None:
    tables = location(1 << 40, [1 << 50]) + location(7, [3]) + function(3, 4) + function(1 << 50, 3)
    heap = heapprofile.read(profile(SAMPLE_TYPE, sample([1 << 40, 7], [5]), tables, STRINGS))
    assert [(r.name, r.flat_bytes, r.cum_bytes) for r in heapprofile.table(heap)] == [
        ("main.leak", 5, 5),
        ("main.main", 0, 5),
    ]


def test_a_function_inlined_into_itself_counts_once() -> None:
    # A location whose inline lines all name one function (a recursion folded by inlining):
    # cum counts a sample once per function, as pprof does.
    tables = location(1, [1, 1, 1, 2]) + function(1, 3) + function(2, 4) + STRINGS
    heap = heapprofile.read(profile(SAMPLE_TYPE, sample([1, 1, 1], [100]), tables))
    assert [(r.name, r.flat_bytes, r.cum_bytes) for r in heapprofile.table(heap)] == [
        ("main.leak", 100, 100),
        ("main.main", 0, 100),
    ]


def test_too_many_inline_lines_are_refused() -> None:
    tables = location(1, [1] * 100_000) + function(1, 3) + STRINGS
    refused(profile(SAMPLE_TYPE, tables), "too-many-lines")


def test_samples_that_do_not_match_the_sample_types_are_refused() -> None:
    refused(profile(SAMPLE_TYPE, sample([1], [1, 2]), TABLES), "bad-sample")
    refused(profile(sample([1], [1]), TABLES), "no-sample-type")


def test_enormous_varints_are_refused() -> None:
    eleven = b"\xff" * 10 + b"\x01"
    refused(profile(SAMPLE_TYPE, message(2, b"\x08" + eleven), TABLES), "bad-message")
    refused(profile(SAMPLE_TYPE, message(2, b"\x0a\x02\xff\xff"), TABLES), "bad-message")
    refused(profile(SAMPLE_TYPE, b"\x12" + eleven, TABLES), "not-pprof")
    # A length of 2^63: refused before anything is read or kept.
    refused(profile(SAMPLE_TYPE, b"\x32" + varint(1 << 63)), "too-large")


def test_negative_values_are_two_complement() -> None:
    heap = heapprofile.read(profile(SAMPLE_TYPE, sample([1], [-40]), sample([1], [100]), TABLES))
    assert heapprofile.table(heap)[0].flat_bytes == 60
    assert heap.totals["inuse_space"] == 140


def test_a_million_strings_are_refused_quickly() -> None:
    data = profile(SAMPLE_TYPE, message(6, b"") * 1_000_000)
    assert len(data) < 10_000
    started = time.monotonic()
    refused(data, "too-many-strings")
    assert time.monotonic() - started < 5


def test_a_100_mb_string_table_in_a_small_gzip_is_refused_in_bounded_memory() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(SAMPLE_TYPE)]
    parts += [compressor.compress(message(6, bytes(MIB - 8))) for _ in range(100)]
    data = b"".join([*parts, compressor.flush()])
    assert len(data) < 200_000
    tracemalloc.start()
    try:
        refused(data, "too-large")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < heapprofile.DEFAULT.string_bytes + 4 * MIB


def test_deep_stacks_are_refused() -> None:
    deep = sample([1] * 5000, [1])
    refused(profile(SAMPLE_TYPE, deep, TABLES), "too-deep")
    wide = sample([1] * 1000, [1]) * 5
    refused(profile(SAMPLE_TYPE, wide, TABLES), "too-many-frames", Limits(frames=4000))


def test_too_many_samples_are_refused_in_the_first_pass() -> None:
    data = profile(SAMPLE_TYPE, sample([], [1]) * 600_000, TABLES)
    assert len(data) < 50_000
    refused(data, "too-many-samples")


@pytest.mark.parametrize(
    ("limits", "parts", "reason"),
    [
        (Limits(locations=10), [location(i, [1]) for i in range(1, 12)], "too-many-locations"),
        (Limits(functions=10), [function(i, 3) for i in range(1, 12)], "too-many-functions"),
        (Limits(sample_types=2), [SAMPLE_TYPE] * 3, "too-many-sample-types"),
        (Limits(message_bytes=100), [location(1, [1] * 50)], "too-large"),
        (Limits(string_bytes=100), [message(6, bytes(101))], "too-large"),
        (Limits(uncompressed_bytes=1000), [message(6, bytes(2000))], "too-large"),
        (Limits(fields=50), [message(6, b"")] * 51, "too-large"),
    ],
)
def test_every_cap_is_enforced(limits: Limits, parts: list[bytes], reason: str) -> None:
    refused(profile(SAMPLE_TYPE, *parts, TABLES), reason, limits)


def test_the_deadline_holds_against_costly_samples() -> None:
    # Every frame names a location with 256 inline lines: a lot of work per byte sent.
    tables = location(1, list(range(1, 257))) + b"".join(function(i, 3) for i in range(1, 257))
    samples = sample([1] * 1000, [1]) * 2000
    limits = Limits(seconds=0.2)
    started = time.monotonic()
    refused(profile(SAMPLE_TYPE, samples, tables, STRINGS), "deadline", limits)
    assert time.monotonic() - started < limits.seconds + 0.5


def test_non_messages_where_messages_belong_are_refused() -> None:
    for field in (1, 2, 4, 5, 6):
        refused(profile(SAMPLE_TYPE, number(field, 1), TABLES), "bad-message")


def test_growth_names_what_grew() -> None:
    before = heapprofile.read(profile(SAMPLE_TYPE, sample([1, 2], [100]), TABLES))
    after = heapprofile.read(profile(SAMPLE_TYPE, sample([1, 2], [250]), sample([2], [30]), TABLES))
    rows = heapprofile.growth(before, after)
    assert [(g.name, g.before_bytes, g.after_bytes, g.delta_bytes) for g in rows] == [
        ("main.leak", 100, 250, 150),
        ("main.main", 0, 30, 30),
    ]
    assert rows[0].delta_share == pytest.approx(1.5)


def test_an_unread_sample_type_is_refused() -> None:
    heap = heapprofile.read(profile(SAMPLE_TYPE, TABLES), sample_types=("alloc_space",))
    with pytest.raises(ProfileError, match=r"^no-sample-type"):
        heapprofile.top(heap, "inuse_space")
