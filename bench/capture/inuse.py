"""In-use bytes of a Go heap profile: the sum of the `inuse_space` sample values.

A small reader of the pprof protobuf (profile.proto fields sample_type=1, sample=2,
string_table=6; ValueType.type=1; Sample.value=2, packed or not), so the bench does not
start `go tool pprof` for every run. `go tool pprof -raw` agrees (checked by
tests/race/test_bench_inuse.py).
"""

import gzip
from collections.abc import Iterator


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one message; varints and length-delimited only."""
    at = 0
    while at < len(data):
        tag, at = _varint(data, at)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, at = _varint(data, at)
            yield number, wire, value
        elif wire == 2:
            length, at = _varint(data, at)
            yield number, wire, data[at : at + length]
            at += length
        elif wire == 1:
            yield number, wire, data[at : at + 8]
            at += 8
        elif wire == 5:
            yield number, wire, data[at : at + 4]
            at += 4
        else:
            raise ValueError(f"unsupported wire type {wire} in a pprof profile")


def _packed(data: bytes) -> list[int]:
    values, at = [], 0
    while at < len(data):
        value, at = _varint(data, at)
        values.append(value)
    return values


def inuse_bytes(profile_gz: bytes) -> int:
    """Sum of inuse_space over all samples of a gzip'd Go heap profile."""
    raw = gzip.decompress(profile_gz)
    strings: list[bytes] = []
    type_ids: list[int] = []
    samples: list[list[int]] = []
    for number, _wire, value in _fields(raw):
        if number == 6 and isinstance(value, bytes):
            strings.append(value)
        elif number == 1 and isinstance(value, bytes):
            type_ids.append(next((v for n, _, v in _fields(value) if n == 1), 0))  # type: ignore[misc]
        elif number == 2 and isinstance(value, bytes):
            values: list[int] = []
            for n, wire, v in _fields(value):
                if n == 2:
                    values.extend(_packed(v) if wire == 2 else [v])  # type: ignore[list-item,arg-type]
            samples.append(values)
    names = [strings[i].decode() for i in type_ids]
    if "inuse_space" not in names:
        raise ValueError(f"not a heap profile: sample types {names}")
    index = names.index("inuse_space")
    return sum(values[index] for values in samples)
