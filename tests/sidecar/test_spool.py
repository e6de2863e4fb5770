"""The spool: object keys, atomic writes, no collisions, bounds (also under concurrent saves),
and keys that hostile values cannot steer outside DUMP_DIR."""

import json
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sidecar.spool import Dump, Spool, SpoolFull, UnsafeKey, object_key

MOMENT = datetime(2026, 3, 4, 5, 6, 7, 89_000, tzinfo=UTC)
KEY_SHAPE = re.compile(
    r"^pfx/ns/pod/\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z-[A-Za-z0-9._-]+-\d+-\d+\.pb\.gz$"
)


def save(
    spool: Spool,
    data: bytes = b"\x1f\x8bprofile",
    comm: str = "app",
    *,
    prefix: str = "pfx/",
    namespace: str = "ns",
    pod: str = "pod",
    port: int = 8080,
) -> Dump:
    return spool.save(
        data,
        {"usage": 1},
        prefix=prefix,
        namespace=namespace,
        pod=pod,
        moment=MOMENT,
        comm=comm,
        pid=42,
        port=port,
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


RACES = 200
SAVERS = 4


def race(spool: Spool, data: bytes) -> tuple[int, int, list[BaseException]]:
    """SAVERS threads save at the same instant (as each port's fetch thread does); returns
    (saved, refused with SpoolFull, any other error)."""
    barrier = threading.Barrier(SAVERS)
    outcomes: list[object] = []
    lock = threading.Lock()

    def one(port: int) -> None:
        barrier.wait(timeout=10)
        try:
            save(spool, data, port=port)
            outcome: object = "saved"
        except SpoolFull:
            outcome = "full"
        except BaseException as error:  # reported by the caller
            outcome = error
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one, args=(8080 + i,)) for i in range(SAVERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(outcomes) == SAVERS, "a saver did not finish within 30s"
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    return outcomes.count("saved"), outcomes.count("full"), errors


@pytest.mark.parametrize("max_files", [1, 2])
def test_concurrent_saves_never_pass_the_file_bound(tmp_path: Path, max_files: int) -> None:
    for run in range(RACES):
        spool = Spool(tmp_path / str(run), max_files, 1 << 30)
        spool.prepare()
        saved, full, errors = race(spool, b"\x1f\x8b" + bytes(4096))
        assert not errors, f"run {run}: {errors}"
        on_disk = len(list(spool.dumps()))
        assert on_disk <= max_files, f"run {run}: {on_disk} dumps with SPOOL_MAX_FILES={max_files}"
        # Every save that did not land was refused with SpoolFull, and only while full.
        assert (saved, full) == (max_files, SAVERS - max_files), f"run {run}"
        assert on_disk == saved


def test_concurrent_saves_never_pass_the_byte_bound(tmp_path: Path) -> None:
    data = b"\x1f\x8b" + bytes(64 * 1024)
    probe = Spool(tmp_path / "probe", 100, 1 << 30)
    save(probe, data)
    one_dump = probe.usage()[1]  # profile and metadata
    max_bytes = int(one_dump * 2.5)  # room for two dumps, not three
    for run in range(RACES):
        spool = Spool(tmp_path / str(run), 100, max_bytes)
        spool.prepare()
        saved, full, errors = race(spool, data)
        assert not errors, f"run {run}: {errors}"
        count, size = spool.usage()
        assert size <= max_bytes, f"run {run}: {size} bytes with SPOOL_MAX_BYTES={max_bytes}"
        assert (saved, full, count) == (2, SAVERS - 2, 2), f"run {run}"


def test_byte_bound_counts_the_metadata_too(tmp_path: Path) -> None:
    data = b"x" * 1000
    probe = Spool(tmp_path / "probe", 10, 1 << 20)
    save(probe, data)
    one_dump = probe.usage()[1]
    assert one_dump > len(data)
    spool = Spool(tmp_path / "spool", 10, one_dump - 1)  # the profile alone would fit
    with pytest.raises(SpoolFull):
        save(spool, data)
    assert spool.usage() == (0, 0)


def test_failed_write_leaves_nothing_and_frees_its_reservation(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1, 1 << 20)
    key = object_key("pfx/", "ns", "pod", MOMENT, "app", 42, 8080)
    # A directory where the metadata file goes: the second rename fails (a real EISDIR).
    blocker = tmp_path / key.replace(".pb.gz", ".json")
    blocker.mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        save(spool)
    assert not (tmp_path / key).exists()
    assert not list(tmp_path.rglob(".tmp-*"))
    blocker.rmdir()
    assert save(spool).profile_path.exists()  # SPOOL_MAX_FILES=1: nothing was left reserved


HOSTILE = [
    # (prefix, namespace, pod, comm): S3_PREFIX and POD_NAME from a pod author, comm from the app
    ("../../x/", "ns", "pod", "app"),
    ("/abs/", "ns", "pod", "app"),
    ("a/../../../b/", "ns", "pod", "app"),
    ("..", "..", "..", ".."),
    ("", "/etc", "../..", "app"),
    ("", "ns", "a/b/../../..", "app"),
    ("./", ".", ".tmp-x", "../../.."),
    ("//", "ns", "pod", "\x1b[2J\r\n../x\t"),
    ("p\x00q/", "ns", "pod", "\x7f\x01/.."),
]


@pytest.mark.parametrize(("prefix", "namespace", "pod", "comm"), HOSTILE)
def test_hostile_key_parts_stay_beneath_dump_dir(
    tmp_path: Path, prefix: str, namespace: str, pod: str, comm: str
) -> None:
    root = tmp_path / "a" / "b" / "spool"
    spool = Spool(root, 10, 1 << 20)
    spool.prepare()
    dump = save(spool, prefix=prefix, namespace=namespace, pod=pod, comm=comm)
    for path in (dump.profile_path, dump.metadata_path):
        assert path.resolve().is_relative_to(root.resolve()), path
    segments = dump.key.split("/")
    assert all(s and not s.startswith(".") for s in segments), dump.key
    assert all(c.isprintable() and c != "\\" for c in dump.key), repr(dump.key)
    assert dump.key.endswith("-42-8080.pb.gz")
    # Nothing was written anywhere but the spool.
    outside = [p for p in tmp_path.rglob("*") if not p.is_relative_to(root)]
    assert sorted(outside) == [tmp_path / "a", tmp_path / "a" / "b"]
    assert [d.key for d in spool.dumps()] == [dump.key]


def test_symlink_planted_in_dump_dir_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spool = Spool(root, 1, 1 << 20)
    spool.prepare()
    os.symlink(elsewhere, root / "pfx")
    with pytest.raises(UnsafeKey, match="outside DUMP_DIR"):
        save(spool)
    assert not list(elsewhere.iterdir())
    # The refusal gave its reservation back: SPOOL_MAX_FILES=1 still has room.
    assert save(spool, prefix="other/").profile_path.is_relative_to(root)
