"""The live path, end to end: a real Go leak in a real cgroup v1 memory group, captured by the
real watcher (`python -m sidecar`, its env contract, a pod's view of /proc) and uploaded to a
real MinIO, through every failure the store or the node can put in the way. In each case
nothing is lost, each failure is logged with its reason, and /metrics (scraped) agrees.

Needs root, the v1 memory controller and MinIO (built and cached by testinfra).
"""

import errno
import gzip
import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sidecar.spool import Spool
from testinfra.minio import MinioServer, running_minio
from tests.sidecar.harness import pprof_top
from tests.sidecar.upload_harness import (
    Line,
    PodView,
    WatcherProcess,
    leak_until_killed,
    running_watcher,
    saved_keys,
    spooled,
    watcher_env,
)

pytestmark = [pytest.mark.s3, pytest.mark.cgroup, pytest.mark.usefixtures("cgroup_v1")]
UPLOADS = "oomdump_uploads_total"
KEY = re.compile(
    r"^oom/shop/api-7d9f8/\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z-go-memory-leak-(\d+)-(\d+)\.pb\.gz$"
)


@pytest.fixture(scope="module")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    with running_minio(tmp_path_factory.mktemp("minio-live") / "data") as server:
        yield server


@pytest.fixture
def bucket() -> str:
    return f"live-{secrets.token_hex(4)}"


@pytest.fixture
def view(tmp_path: Path) -> PodView:
    return PodView(tmp_path / "proc")


@pytest.fixture
def dump_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def uploaded(watcher: WatcherProcess, keys: list[str], timeout: float = 30.0) -> None:
    for key in keys:
        watcher.wait_for(lambda line, k=key: line.is_event("upload-done", key=k), key, timeout)


def assert_in_bucket(minio: MinioServer, bucket: str, keys: list[str]) -> None:
    """Both objects of each dump are in the bucket: a gzip profile and its metadata."""
    client = minio.client()
    for key in keys:
        profile = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert gzip.decompress(profile), key
        metadata_key = key.removesuffix(".pb.gz") + ".json"
        metadata = json.loads(client.get_object(Bucket=bucket, Key=metadata_key)["Body"].read())
        match = KEY.match(key)
        assert match, key
        assert metadata["key"] == key
        assert (metadata["pid"], metadata["port"]) == (int(match[1]), int(match[2]))
        assert metadata["comm"] == "go-memory-leak"


def failures(watcher: WatcherProcess, reason: str, **expected: str) -> list[Line]:
    return watcher.events("upload-failed", reason=reason, **expected)


def boto_imports(watcher: WatcherProcess) -> list[Line]:
    """`-X importtime` lines (written as each module loads) for boto3 or botocore."""

    def is_boto(line: Line) -> bool:
        if not line.text.startswith("import time:"):
            return False
        module = line.text.rsplit("|", 1)[-1].strip()
        return module == "boto3" or module.split(".")[0] == "botocore"

    return watcher.matching(is_boto)


def test_capture_is_uploaded_with_its_key_and_metadata_and_boto3_loads_only_then(
    minio: MinioServer, bucket: str, view: PodView, dump_dir: Path, leak_binary: Path
) -> None:
    minio.make_bucket(bucket)
    env = watcher_env(minio, bucket, dump_dir, view)
    with running_watcher(env, python_flags=("-X", "importtime")) as watcher:
        # Up, serving /metrics, a bucket configured, nothing to upload: boto3 is not loaded.
        assert watcher.metric("oomdump_watched_processes") == 0
        assert watcher.events("upload-enabled", bucket=bucket)
        assert not boto_imports(watcher), "boto3 was imported by an idle watcher"
        pid = leak_until_killed(leak_binary, view, watcher)
        keys = saved_keys(watcher, dump_dir, pid)
        assert keys, str(watcher)
        uploaded(watcher, keys)
        first_saved = watcher.events("dump-saved")[0]
        loaded = boto_imports(watcher)
        assert loaded and loaded[0].at >= first_saved.at, "boto3 loaded before the first dump"
        assert watcher.metric(UPLOADS, outcome="uploaded", reason="") == len(keys)
        assert not watcher.events("upload-failed")
        assert watcher.terminate() == 0
    assert spooled(dump_dir) == [], "uploaded dumps stay in the spool"
    assert_in_bucket(minio, bucket, keys)
    profile = dump_dir.parent / "downloaded.pb.gz"
    profile.write_bytes(minio.client().get_object(Bucket=bucket, Key=keys[0])["Body"].read())
    assert "main.leakDocuments" in pprof_top(leak_binary, profile)


def test_store_down_at_capture_then_up_loses_nothing(
    minio: MinioServer, bucket: str, view: PodView, dump_dir: Path, leak_binary: Path
) -> None:
    minio.make_bucket(bucket)
    minio.stop()
    try:
        with running_watcher(watcher_env(minio, bucket, dump_dir, view)) as watcher:
            pid = leak_until_killed(leak_binary, view, watcher)
            keys = saved_keys(watcher, dump_dir, pid)
            assert keys, str(watcher)
            for key in keys:
                found = watcher.wait_count(
                    lambda line, k=key: line.is_event("upload-failed", key=k), 2, key
                )
                assert {line.fields["reason"] for line in found} == {"Unreachable"}
                assert "unreachable" in found[0].fields["detail"]
                assert Path(found[0].fields["kept"]).is_file()
            minio.start()
            uploaded(watcher, keys)
            refused = len(failures(watcher, "Unreachable"))
            assert watcher.metric(UPLOADS, outcome="failed", reason="Unreachable") == refused
            assert watcher.metric(UPLOADS, outcome="uploaded", reason="") == len(keys)
            assert watcher.terminate() == 0
    finally:
        minio.start()
    assert spooled(dump_dir) == []
    assert_in_bucket(minio, bucket, keys)


def test_watcher_killed_after_saving_is_uploaded_by_the_restart(
    minio: MinioServer, bucket: str, view: PodView, dump_dir: Path, leak_binary: Path
) -> None:
    minio.make_bucket(bucket)
    env = watcher_env(minio, bucket, dump_dir, view)
    minio.stop()
    try:
        with running_watcher(env) as first:
            pid = leak_until_killed(leak_binary, view, first)
            keys = saved_keys(first, dump_dir, pid)
            assert keys, str(first)
            for key in keys:
                first.wait_for(lambda line, k=key: line.is_event("upload-failed", key=k), key)
            first.kill()  # SIGKILL: no grace, no last try
        both = sorted([*keys, *(k.removesuffix(".pb.gz") + ".json" for k in keys)])
        assert spooled(dump_dir) == both
        minio.start()
        with running_watcher(env) as second:
            for key in keys:
                assert second.events("upload-queued", key=key, source="left by an earlier run")
            uploaded(second, keys)
            assert second.metric(UPLOADS, outcome="uploaded", reason="") == len(keys)
            assert second.terminate() == 0
    finally:
        minio.start()
    assert spooled(dump_dir) == []
    assert_in_bucket(minio, bucket, keys)


def test_missing_bucket_backs_off_to_its_cap_then_uploads_once_created(
    minio: MinioServer, bucket: str, view: PodView, dump_dir: Path, leak_binary: Path
) -> None:
    low, high = 0.2, 1.0  # UPLOAD_BACKOFF_MIN / _MAX in watcher_env
    with running_watcher(watcher_env(minio, bucket, dump_dir, view)) as watcher:
        pid = leak_until_killed(leak_binary, view, watcher)
        keys = saved_keys(watcher, dump_dir, pid)
        assert keys, str(watcher)
        key = keys[0]
        tries = watcher.wait_count(
            lambda line: line.is_event("upload-failed", key=key), 7, "seven failed attempts"
        )[:7]
        assert {line.fields["reason"] for line in tries} == {"NoSuchBucket"}
        assert {line.fields["detail"] for line in tries} == {"the bucket does not exist"}
        assert [int(line.fields["attempt"]) for line in tries] == list(range(1, 8))
        delays = [float(line.fields["retry_in"].removesuffix("s")) for line in tries]
        for attempt, delay in enumerate(delays, start=1):
            step = min(high, low * 2 ** (attempt - 1))  # 0.2, 0.4, 0.8, then the cap
            assert 0.8 * step - 0.001 <= delay <= step + 0.001, (attempt, delays)
        assert max(delays) <= high
        # The uploader really waits what it logs: the next attempt comes no sooner (the
        # lines' arrival times, read as they come), and not much later (one PUT to loopback).
        for before, after, delay in zip(tries, tries[1:], delays, strict=False):
            assert delay - 0.1 <= after.at - before.at <= delay + 2.0, delays
        assert Path(tries[-1].fields["kept"]).is_file()
        minio.make_bucket(bucket)
        uploaded(watcher, keys)
        refused = len(failures(watcher, "NoSuchBucket"))
        assert watcher.metric(UPLOADS, outcome="failed", reason="NoSuchBucket") == refused
        assert watcher.metric(UPLOADS, outcome="uploaded", reason="") == len(keys)
        assert watcher.terminate() == 0
    assert spooled(dump_dir) == []
    assert_in_bucket(minio, bucket, keys)


@pytest.mark.parametrize(
    ("variable", "reason", "detail"),
    [
        ("AWS_SECRET_ACCESS_KEY", "SignatureDoesNotMatch", "the secret key is wrong"),
        ("AWS_ACCESS_KEY_ID", "InvalidAccessKeyId", "the access key is not known to the server"),
    ],
)
def test_refused_credentials_keep_dumps_until_a_restart_with_good_ones(
    minio: MinioServer,
    bucket: str,
    view: PodView,
    dump_dir: Path,
    leak_binary: Path,
    variable: str,
    reason: str,
    detail: str,
) -> None:
    minio.make_bucket(bucket)
    good = watcher_env(minio, bucket, dump_dir, view)
    with running_watcher({**good, variable: "wrong" + secrets.token_hex(8)}) as first:
        pid = leak_until_killed(leak_binary, view, first)
        keys = saved_keys(first, dump_dir, pid)
        assert keys, str(first)
        for key in keys:
            found = first.wait_count(
                lambda line, k=key: line.is_event("upload-failed", key=k), 2, key
            )
            assert {(line.fields["reason"], line.fields["detail"]) for line in found} == {
                (reason, detail)
            }
        assert first.metric(UPLOADS, outcome="failed", reason=reason) >= 2 * len(keys)
        assert first.terminate() == 0  # SIGTERM: the grace ends with the dumps still refused
        assert first.events("upload-left-in-spool", dumps=str(len(keys)))
    assert all((dump_dir / key).is_file() for key in keys)
    with running_watcher(good) as second:  # e.g. the Secret fixed and the pod restarted
        uploaded(second, keys)
        assert second.terminate() == 0
    assert spooled(dump_dir) == []
    assert_in_bucket(minio, bucket, keys)


@pytest.fixture
def small_disk(dump_dir: Path) -> Iterator[Path]:
    """DUMP_DIR on a 1 MiB tmpfs of its own (an emptyDir with a sizeLimit, a small volume)."""
    dump_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(dump_dir)], check=True)
    try:
        yield dump_dir
    finally:
        subprocess.run(["umount", "-l", str(dump_dir)], check=True)


def fill(disk: Path) -> Path:
    """Write a file until the filesystem says ENOSPC; the disk is then full."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
    return filler


def test_full_spool_disk_refuses_with_the_reason_and_recovers(
    minio: MinioServer, bucket: str, view: PodView, small_disk: Path, leak_binary: Path
) -> None:
    # No bucket yet: the first dump waits in the spool while the disk fills.
    with running_watcher(watcher_env(minio, bucket, small_disk, view)) as watcher:
        kept = saved_keys(watcher, small_disk, leak_until_killed(leak_binary, view, watcher))
        assert kept, str(watcher)
        filler = fill(small_disk)
        refused_pid = leak_until_killed(leak_binary, view, watcher)
        refused = watcher.events("dump-refused", pid=str(refused_pid))
        assert refused, str(watcher)
        assert {line.fields["reason"] for line in refused} == {"spool-error"}
        assert all("No space left on device" in line.fields["detail"] for line in refused)
        assert not saved_keys(watcher, small_disk, refused_pid)
        spool_errors = watcher.metric("oomdump_capture_failures_total", reason="spool-error")
        assert spool_errors == len(refused)
        # Nothing half-written stays to hold the space, and the waiting dump is intact.
        assert not [path for path in spooled(small_disk) if ".tmp-" in path]
        assert all((small_disk / key).is_file() for key in kept)
        filler.unlink()
        minio.make_bucket(bucket)
        uploaded(watcher, kept)
        later = saved_keys(watcher, small_disk, leak_until_killed(leak_binary, view, watcher))
        assert later, str(watcher)
        uploaded(watcher, later)
        assert watcher.terminate() == 0
    assert spooled(small_disk) == []
    assert_in_bucket(minio, bucket, [*kept, *later])


def test_a_dump_the_store_keeps_refusing_does_not_hold_back_the_others(
    minio: MinioServer, bucket: str, view: PodView, dump_dir: Path, leak_binary: Path
) -> None:
    minio.make_bucket(bucket)
    # As an earlier run with a very long S3_PREFIX (set directly, not through the webhook)
    # left it: a key of over 1024 bytes, which S3 and MinIO refuse for good.
    spool = Spool(dump_dir, 100, 1 << 30)
    spool.prepare()
    stuck = spool.save(
        b"\x1f\x8b-stuck",
        {"pid": 1},
        prefix="/".join(["p" * 200] * 5) + "/",
        namespace="shop",
        pod="api-7d9f8",
        moment=datetime.now(UTC),
        comm="go-memory-leak",
        pid=1,
        port=6060,
    )
    assert len(stuck.key) > 1024
    env = watcher_env(
        minio, bucket, dump_dir, view, UPLOAD_BACKOFF_MIN="1s", UPLOAD_BACKOFF_MAX="30s"
    )
    with running_watcher(env) as watcher:
        # Four refusals: its next try is 6.4-8 s away, longer than a capture takes.
        tries = watcher.wait_count(
            lambda line: line.is_event("upload-failed", key=stuck.key), 4, "four refusals"
        )
        reason = tries[0].fields["reason"]
        assert reason not in ("Unreachable", "NoSuchBucket") and tries[0].fields["detail"]
        pid = leak_until_killed(leak_binary, view, watcher)
        keys = saved_keys(watcher, dump_dir, pid)
        assert keys, str(watcher)
        uploaded(watcher, keys)
        for key in keys:
            saved = watcher.events("dump-saved", path=str(dump_dir / key))[0]
            done = watcher.events("upload-done", key=key)[0]
            # A margin for a loaded machine; a shared backoff would make this >= 3 s.
            assert done.at - saved.at < 2.0, (key, done.at - saved.at)
        assert stuck.profile_path.is_file() and stuck.metadata_path.is_file()
        refusals = len(failures(watcher, reason, key=stuck.key))
        assert watcher.metric(UPLOADS, outcome="failed", reason=reason) == refusals
        assert watcher.metric(UPLOADS, outcome="uploaded", reason="") == len(keys)
        assert watcher.terminate() == 0
        assert watcher.events("upload-left-in-spool", dumps="1")
    assert spooled(dump_dir) == sorted(
        p.relative_to(dump_dir).as_posix() for p in (stuck.profile_path, stuck.metadata_path)
    )
    assert_in_bucket(minio, bucket, keys)
