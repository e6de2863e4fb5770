"""Is this a Go pprof profile? gzip, then protobuf that walks as a perftools Profile.

Only the outer message is walked (field numbers and wire types of profile.proto), which is
enough to tell a profile from an HTML page, a JSON error, or other gzip'd data.

The body comes from the app, so nothing here holds the inflated profile: `inflate` yields it
in chunks of at most `CHUNK` bytes under a cap on the total, and `Fields` walks the outer
message across chunk boundaries, skipping payloads without keeping them. A check holds one
chunk (plus a few bytes of a varint split between chunks) whatever the input.
"""

import zlib
from collections.abc import Iterator

GZIP_MAGIC = b"\x1f\x8b"
# Real Go heap profiles are 1-16 KB gzip'd and inflate to a few KB-1 MiB: the demo's 0.9 KB,
# a program retaining from 16384 distinct stacks at MemProfileRate=1 (65 KB gzip'd) 1.3 MiB.
# 32 MiB is 25x the latter. The check's memory does not grow with the cap (it streams); the
# cap bounds its CPU (about 0.1 s to inflate 32 MiB) and what a reader of the profile holds.
MAX_UNCOMPRESSED = 32 * 1024 * 1024
# Outer fields: that 1.3 MiB profile has 16.6 thousand (80 bytes each on average). A cap on
# their number bounds the walk's CPU (about 1 us a field) when the app sends tiny fields.
MAX_FIELDS = 1_000_000
# Output chunk size and compressed input fed per step. Deflate expands at most ~1032:1, so
# one input piece yields at most ~16 MiB, drained in CHUNK-sized outputs.
CHUNK = 64 * 1024
_INPUT_PIECE = 16 * 1024
_MAX_VARINT = 10

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


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"


def inflate(data: bytes, limit: int = MAX_UNCOMPRESSED, chunk: int = CHUNK) -> Iterator[bytes]:
    """The gzip stream's inflated bytes, in chunks of at most `chunk` bytes.

    Raises NotAProfile (`too-large` past `limit` bytes; `not-gzip` for bad, truncated,
    multi-member or trailing data) as soon as the problem is reached."""
    if not data.startswith(GZIP_MAGIC):
        raise NotAProfile("not-gzip")
    view = memoryview(data)
    inflater = zlib.decompressobj(wbits=31)
    total = 0
    end = 0
    while not inflater.eof and end < len(view):
        pending: bytes | memoryview = view[end : end + _INPUT_PIECE]
        end += len(pending)
        while True:
            try:
                out = inflater.decompress(pending, chunk)
            except zlib.error as error:
                raise NotAProfile(f"not-gzip: {error}") from None
            pending = inflater.unconsumed_tail
            if out:
                total += len(out)
                if total > limit:
                    raise NotAProfile(f"too-large: more than {_mib(limit)} uncompressed")
                yield out
            if inflater.eof or not (out or pending):
                break
    if not inflater.eof:
        raise NotAProfile("not-gzip: truncated gzip stream")
    trailing = len(inflater.unused_data) + len(view) - end
    if trailing:
        head = (inflater.unused_data + bytes(view[end : end + 2]))[:2]
        what = "a second gzip member" if head == GZIP_MAGIC else "trailing data"
        raise NotAProfile(f"not-gzip: {trailing} bytes of {what} after the gzip stream")


class Fields:
    """The fields of a protobuf message whose bytes arrive as chunks.

    `next()` gives (field number, wire type, value) with the value of a varint, or the
    length of a length-delimited payload, which the caller then `skip`s or `read`s. Offsets
    in messages are positions in the inflated stream."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._position = 0
        self._consumed = 0  # stream offset of self._buffer[0]
        self._ended = False

    @property
    def offset(self) -> int:
        return self._consumed + self._position

    def _more(self) -> bool:
        """Append the next chunk to what is left of the buffer; False at the end."""
        if self._ended:
            return False
        piece = next(self._chunks, None)
        if piece is None:
            self._ended = True
            return False
        self._consumed += self._position
        self._buffer = self._buffer[self._position :] + piece
        self._position = 0
        return True

    def at_end(self) -> bool:
        while self._position >= len(self._buffer):
            if not self._more():
                return True
        return False

    def varint(self) -> int:
        while len(self._buffer) - self._position < _MAX_VARINT and self._more():
            pass
        buffer, position = self._buffer, self._position
        value, shift = 0, 0
        for index in range(position, min(position + _MAX_VARINT, len(buffer))):
            byte = buffer[index]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                self._position = index + 1
                return value & 0xFFFF_FFFF_FFFF_FFFF
            shift += 7
        if len(buffer) - position >= _MAX_VARINT:
            raise NotAProfile(f"not-pprof: varint longer than 10 bytes at {self.offset}")
        raise NotAProfile(f"not-pprof: truncated varint at {self.offset}")

    def next(self) -> tuple[int, int, int] | None:
        """The next field's (number, wire type, varint value or payload length), or None."""
        buffer, position = self._buffer, self._position
        if position + 2 <= len(buffer):
            tag, value = buffer[position], buffer[position + 1]
            if not (tag & 0x85 or value & 0x80):
                # The common case in one step: a one-byte tag of wire type 0 or 2 and a
                # one-byte value or length.
                self._position = position + 2
                return tag >> 3, tag & 7, value
        if self.at_end():
            return None
        tag = self.varint()
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            return number, wire_type, self.varint()
        if wire_type == 2:
            return number, wire_type, self.varint()
        if wire_type == 1:
            return number, wire_type, 8
        if wire_type == 5:
            return number, wire_type, 4
        raise NotAProfile(f"not-pprof: field {number} wire type {wire_type} at {self.offset}")

    def skip(self, length: int) -> None:
        """Pass over `length` bytes without keeping them."""
        while True:
            available = len(self._buffer) - self._position
            if length <= available:
                self._position += length
                return
            length -= available
            self._position = len(self._buffer)
            if not self._more():
                raise NotAProfile(f"not-pprof: length runs past the end at {self.offset}")

    def read(self, length: int) -> bytes:
        """The next `length` bytes (the caller bounds `length`)."""
        parts: list[bytes] = []
        while True:
            available = len(self._buffer) - self._position
            if length <= available:
                parts.append(self._buffer[self._position : self._position + length])
                self._position += length
                return b"".join(parts)
            parts.append(self._buffer[self._position :])
            length -= available
            self._position = len(self._buffer)
            if not self._more():
                raise NotAProfile(f"not-pprof: length runs past the end at {self.offset}")


def check(data: bytes, limit: int = MAX_UNCOMPRESSED) -> None:
    """Raise NotAProfile unless `data` is a gzip'd pprof Profile of at most `limit` bytes
    inflated."""
    fields = Fields(inflate(data, limit))
    seen: set[int] = set()
    count = 0
    while (field := fields.next()) is not None:
        number, wire_type, value = field
        count += 1
        if count > MAX_FIELDS:
            raise NotAProfile(f"too-large: more than {MAX_FIELDS} fields")
        allowed = _PROFILE_FIELDS.get(number)
        if allowed is None or wire_type not in allowed:
            raise NotAProfile(f"not-pprof: field {number} wire type {wire_type} at {fields.offset}")
        if wire_type == 2:
            if value > limit:
                raise NotAProfile(
                    f"too-large: field {number} declares {value} bytes, more than {_mib(limit)}"
                )
            fields.skip(value)
        seen.add(number)
    if not {1, 6} <= seen:
        raise NotAProfile("not-pprof: no sample_type or string_table")
