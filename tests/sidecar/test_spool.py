"""The spool: object keys, atomic writes, no collisions, bounds."""

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sidecar.spool import Spool, SpoolFull, object_key

MOMENT = datetime(2026, 3, 4, 5, 6, 7, 89_000, tzinfo=UTC)
KEY_SHAPE = re.compile(
    r"^pfx/ns/pod/\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z-[A-Za-z0-9._-]+-\d+-\d+\.pb\.gz$"
)


def save(spool: Spool, data: bytes = b"\x1f\x8bprofile", comm: str = "app") -> object:
    return spool.save(
        data,
        {"usage": 1},
        prefix="pfx/",
        namespace="ns",
        pod="pod",
        moment=MOMENT,
        comm=comm,
        pid=42,
        port=8080,
    )


def test_key_follows_the_contract() -> None:
    key = object_key("pfx/", "ns", "pod", MOMENT, "app", 42, 8080)
    assert key == "pfx/ns/pod/2026-03-04T05-06-07.089Z-app-42-8080.pb.gz"


def test_unsafe_comm_is_sanitised() -> None:
    key = object_key("", "ns", "pod", MOMENT, "we/ird name", 1, 2)
    assert key.endswith("-we_ird_name-1-2.pb.gz")
    assert key.count("/") == 2


def test_save_writes_profile_and_metadata(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10, 1 << 20)
    spool.prepare()
    dump = save(spool)
    assert dump.profile_path.read_bytes() == b"\x1f\x8bprofile"
    assert json.loads(dump.metadata_path.read_text())["key"] == dump.key
    assert dump.metadata_key.endswith(".json")
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_same_millisecond_pid_port_never_collide(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10, 1 << 20)
    keys = [save(spool, data=bytes([i])).key for i in range(3)]
    assert len(set(keys)) == 3
    assert all(KEY_SHAPE.match(key) for key in keys)
    assert [d.profile_path.read_bytes() for d in spool.dumps()] == [b"\x00", b"\x01", b"\x02"]


def test_key_left_by_an_earlier_run_is_not_overwritten(tmp_path: Path) -> None:
    first = save(Spool(tmp_path, 10, 1 << 20), data=b"old")
    second = save(Spool(tmp_path, 10, 1 << 20), data=b"new")
    assert first.key != second.key
    assert first.profile_path.read_bytes() == b"old"


def test_full_by_count_refuses_and_keeps_existing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 2, 1 << 20)
    save(spool)
    save(spool)
    with pytest.raises(SpoolFull, match="SPOOL_MAX_FILES=2"):
        save(spool)
    assert len(list(spool.dumps())) == 2


def test_full_by_bytes_refuses(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 100, 2048)
    save(spool, data=b"x" * 1000)
    with pytest.raises(SpoolFull, match="SPOOL_MAX_BYTES=2048"):
        save(spool, data=b"x" * 1500)


def test_prepare_removes_half_written_temporaries(tmp_path: Path) -> None:
    stale = tmp_path / "ns" / "pod" / ".tmp-2026-x.pb.gz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"partial")
    assert Spool(tmp_path, 10, 1 << 20).prepare() == [str(stale)]
    assert not stale.exists()
