"""profile.check: streaming inflation under a cap, the outer walk across chunk boundaries, and
the refusals of what a hostile app can send (bombs, multi-member, trailing, truncated)."""

import gzip
import subprocess
import sys
import textwrap
import urllib.request
import zlib
from pathlib import Path

import pytest

from sidecar import profile
from testinfra.protobuf import varint

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
BOMB_MIB = 300

# Run in a fresh interpreter so VmHWM (the peak resident size of this process's memory, which
# unlike ru_maxrss does not inherit the parent's peak through fork and exec) measures this
# check alone: argv is the profile module's file and the body's file; prints the reason and
# the growth of the peak, in KiB, over the check.
MEASURE = textwrap.dedent(
    """
    import importlib.util, sys
    def peak():
        with open("/proc/self/status") as status:
            return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
    spec = importlib.util.spec_from_file_location("candidate", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    body = open(sys.argv[2], "rb").read()
    before = peak()
    try:
        module.check(body)
        reason = "ok"
    except module.NotAProfile as error:
        reason = str(error).partition(":")[0]
    after = peak()
    print(reason, after - before)
    """
)


def gzip_stream(pieces: list[bytes], repeat: int = 1) -> bytes:
    """gzip of the pieces, repeated, compressed as they go (a bomb never exists inflated)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [compressor.compress(piece) for _ in range(repeat) for piece in pieces]
    return b"".join([*out, compressor.flush()])


def minimal_profile(padding: int = 0) -> bytes:
    """The outer message of a tiny Profile (sample_type, string table), plus `padding` bytes
    in one more string."""
    value_type = b"\x08\x01\x10\x02"  # type = string 1, unit = string 2
    strings = [b"", b"inuse_space", b"bytes", b"x" * padding]
    body = b"\x0a" + varint(len(value_type)) + value_type
    return body + b"".join(b"\x32" + varint(len(s)) + s for s in strings)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 MiB of valid-looking outer fields (string-table entries of 1 MiB of zeros)."""
    entry = b"\x32" + varint(MIB) + bytes(MIB)
    path = tmp_path_factory.mktemp("bomb") / "bomb.pb.gz"
    path.write_bytes(gzip_stream([minimal_profile(), entry], repeat=BOMB_MIB))
    return path


def measure(module_file: Path, body: Path) -> tuple[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(module_file), str(body)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    reason, grown_kib = result.stdout.split()
    return reason, int(grown_kib)


def test_gzip_bomb_is_refused_with_bounded_memory(bomb: Path) -> None:
    assert bomb.stat().st_size < 400 * 1024  # a small body that passes any byte cap
    reason, grown_kib = measure(REPO / "sidecar" / "profile.py", bomb)
    assert reason == "too-large"
    # The check holds one 64 KiB chunk; 16 MiB is generous and still far below both the
    # bomb's 300 MiB and the watcher's 128 MiB limit.
    assert grown_kib < 16 * 1024


def test_many_tiny_fields_are_refused_by_count() -> None:
    # time_nanos = 0, again and again: 2 bytes a field, 150 million fields.
    data = gzip_stream([b"\x48\x00" * (512 * 1024)], repeat=BOMB_MIB)
    with pytest.raises(profile.NotAProfile, match=r"^too-large: more than \d+ fields"):
        profile.check(data)


def test_a_field_declaring_more_than_the_cap_is_refused_before_inflating_it() -> None:
    data = gzip.compress(minimal_profile() + b"\x32" + varint(BOMB_MIB * MIB) + bytes(1024))
    with pytest.raises(profile.NotAProfile, match=r"^too-large: field 6 declares"):
        profile.check(data)


def test_the_cap_is_on_inflated_bytes() -> None:
    raw = minimal_profile(padding=100_000)
    data = gzip.compress(raw)
    profile.check(data, limit=len(raw))
    with pytest.raises(profile.NotAProfile, match=r"^too-large"):
        profile.check(data, limit=len(raw) - 1)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (gzip.compress(minimal_profile()) * 2, "a second gzip member"),
        (gzip.compress(minimal_profile()) + b"<html>", "6 bytes of trailing data"),
        (gzip.compress(minimal_profile()) + b"\x1f", "1 bytes of trailing data"),
        (gzip.compress(minimal_profile())[:-4], "truncated gzip stream"),
        (gzip.compress(minimal_profile())[:12], "truncated gzip stream"),
        (gzip.compress(minimal_profile())[:-8] + b"\0" * 8, "incorrect data check"),
    ],
    ids=["two-members", "trailing-html", "trailing-byte", "no-size", "header-only", "crc"],
)
def test_gzip_framing_is_refused_with_a_reason(body: bytes, message: str) -> None:
    with pytest.raises(profile.NotAProfile, match=f"^not-gzip: .*{message}"):
        profile.check(body)


def test_protobuf_errors_name_the_offset() -> None:
    cases = {
        b"\x0a\x05ab": "length runs past the end",
        b"\x48" + b"\xff" * 11: "varint longer than 10 bytes",
        b"\x48\xff": "truncated varint",
        b"\x0b": "field 1 wire type 3",
    }
    for raw, message in cases.items():
        with pytest.raises(profile.NotAProfile, match=f"^not-pprof: {message} at \\d+"):
            profile.check(gzip.compress(raw))


def fetch(port: int, query: str = "") -> bytes:
    url = f"http://127.0.0.1:{port}/debug/pprof/heap{query}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read()


def test_real_profiles_pass(go_pprof_port: int) -> None:
    for query in ("", "?gc=1"):
        profile.check(fetch(go_pprof_port, query))


def test_fields_walk_the_same_across_any_chunking(go_pprof_port: int) -> None:
    data = fetch(go_pprof_port)
    raw = gzip.decompress(data)

    def walk(chunks: list[bytes]) -> list[tuple[int, int, int, bytes]]:
        fields = profile.Fields(iter(chunks))
        seen = []
        while (field := fields.next()) is not None:
            payload = fields.read(field[2]) if field[1] == 2 else b""
            seen.append((*field, payload))
        return seen

    whole = walk([raw])
    assert len(whole) > 10
    assert walk([raw[i : i + 1] for i in range(len(raw))]) == whole
    assert walk([raw[i : i + 7] for i in range(0, len(raw), 7)]) == whole
    assert walk(list(profile.inflate(data, chunk=13))) == whole
