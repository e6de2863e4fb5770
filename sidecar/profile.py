"""Is this a Go pprof profile? gzip, then protobuf that walks as a perftools Profile.

Only the outer message is walked (field numbers and wire types of profile.proto), which is
enough to tell a profile from an HTML page, a JSON error, or other gzip'd data.
"""

import zlib

GZIP_MAGIC = b"\x1f\x8b"
MAX_UNCOMPRESSED = 512 * 1024 * 1024

# profile.proto: field number -> allowed wire types (0 varint, 2 length-delimited; repeated
# scalars may be packed, so those allow both).
_PROFILE_FIELDS: dict[int, tuple[int, ...]] = {
    1: (2,),  # sample_type
    2: (2,),  # sample
    3: (2,),  # mapping
    4: (2,),  # location
    5: (2,),  # function
    6: (2,),  # string_table
    7: (0,),  # drop_frames
    8: (0,),  # keep_frames
    9: (0,),  # time_nanos
    10: (0,),  # duration_nanos
    11: (2,),  # period_type
    12: (0,),  # period
    13: (0, 2),  # comment
    14: (0,),  # default_sample_type
    15: (0,),  # doc_url (newer pprof)
}


class NotAProfile(ValueError):
    """The bytes are not a pprof profile; the message is the reason (`not-gzip`, ...)."""


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise NotAProfile("not-pprof: truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def decompress(data: bytes) -> bytes:
    if not data.startswith(GZIP_MAGIC):
        raise NotAProfile("not-gzip")
    inflater = zlib.decompressobj(wbits=31)
    try:
        raw = inflater.decompress(data, MAX_UNCOMPRESSED)
    except zlib.error as error:
        raise NotAProfile(f"not-gzip: {error}") from None
    if inflater.unconsumed_tail:
        raise NotAProfile("too-large: more than 512 MiB uncompressed")
    if not inflater.eof:
        raise NotAProfile("not-gzip: truncated gzip stream")
    return raw


def check(data: bytes) -> None:
    """Raise NotAProfile unless `data` is a gzip'd pprof Profile."""
    raw = decompress(data)
    position = 0
    seen: set[int] = set()
    while position < len(raw):
        tag, position = _varint(raw, position)
        number, wire_type = tag >> 3, tag & 7
        allowed = _PROFILE_FIELDS.get(number)
        if allowed is None or wire_type not in allowed:
            raise NotAProfile(f"not-pprof: field {number} wire type {wire_type} at {position}")
        if wire_type == 0:
            _, position = _varint(raw, position)
        else:
            length, position = _varint(raw, position)
            position += length
            if position > len(raw):
                raise NotAProfile("not-pprof: length runs past the end")
        seen.add(number)
    if not {1, 6} <= seen:
        raise NotAProfile("not-pprof: no sample_type or string_table")
