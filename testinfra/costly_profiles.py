"""Heap profiles for timing the watcher's culprit reader: one that runs into its deadline,
and a small one (gzip'd pprof, as an app serves them)."""

import gzip

from testinfra.protobuf import message, number, varint


def _profile(samples: bytes, names: list[bytes]) -> bytes:
    """inuse_space/bytes, locations 1..n each one line of function i, named `names[i-1]`."""
    strings = [b"", b"inuse_space", b"bytes", *names]
    tables = b""
    for ident in range(1, len(names) + 1):
        tables += message(4, number(1, ident) + message(4, number(1, ident)))
        tables += message(5, number(1, ident) + number(2, 2 + ident))
    head = message(1, number(1, 1) + number(2, 2))
    return gzip.compress(head + samples + tables + b"".join(message(6, s) for s in strings))


def _sample(location: int, value: int) -> bytes:
    return message(2, message(1, varint(location)) + message(2, varint(value)))


def deadline_profile(samples: int = 450_000) -> bytes:
    """One-frame samples of main.f: 3.4 MiB inflated, 5 KB sent, well inside every size cap,
    and more than 0.5 s of aggregating for the reader (which stops at its deadline)."""
    return _profile(_sample(1, 7) * samples, [b"main.f"])


def small_profile(leak: bytes = b"main.leak") -> bytes:
    """`leak` holds 1 MiB, main.main 64 KiB: read in a millisecond."""
    return _profile(_sample(1, 1 << 20) + _sample(2, 1 << 16), [leak, b"main.main"])
