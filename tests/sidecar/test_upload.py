"""Uploads to a real S3 server process (MinIO built from its Go module by testinfra)."""

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest

from sidecar.config import ConfigError, load_config
from sidecar.spool import Dump, Spool
from sidecar.upload import Uploader
from testinfra.minio import MinioServer, running_minio
from testinfra.waiting import wait_for

pytestmark = pytest.mark.s3
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    with running_minio(tmp_path_factory.mktemp("minio") / "data") as server:
        yield server


@pytest.fixture
def bucket() -> str:
    return f"dumps-{secrets.token_hex(4)}"


def client_for(server: MinioServer, secret: str | None = None) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=secret or server.secret_key,
        region_name="us-east-1",
        config=botocore.config.Config(
            s3={"addressing_style": "path"},
            connect_timeout=1,
            read_timeout=5,
            retries={"max_attempts": 1},
        ),
    )


def spooled_dump(root: Path, pid: int = 42) -> Dump:
    spool = Spool(root, 100, 1 << 30)
    spool.prepare()
    return spool.save(
        b"\x1f\x8b-profile-" + str(pid).encode(),
        {"pid": pid},
        prefix="p/",
        namespace="ns",
        pod="pod",
        moment=datetime.now(UTC),
        comm="app",
        pid=pid,
        port=8080,
    )


def object_body(server: MinioServer, bucket: str, key: str) -> bytes:
    return client_for(server).get_object(Bucket=bucket, Key=key)["Body"].read()


def make_uploader(root: Path, bucket: str, factory: Callable[[], Any]) -> Uploader:
    return Uploader(Spool(root, 100, 1 << 30), bucket, factory, min_backoff=0.05, max_backoff=0.2)


def test_upload_then_local_files_removed(
    minio: MinioServer, bucket: str, tmp_path: Path, logs
) -> None:
    minio.make_bucket(bucket)
    dump = spooled_dump(tmp_path)
    uploader = make_uploader(tmp_path, bucket, lambda: client_for(minio))
    uploader.start()
    try:
        wait_for(lambda: not dump.profile_path.exists(), "the local profile to go")
    finally:
        uploader.stop(5)
    assert object_body(minio, bucket, dump.key) == b"\x1f\x8b-profile-42"
    assert b'"pid": 42' in object_body(minio, bucket, dump.metadata_key)
    assert not dump.metadata_path.exists()
    assert logs.matching("event=upload-done", f"key={dump.key}")


def test_missing_bucket_keeps_dump_until_it_exists(
    minio: MinioServer, bucket: str, tmp_path: Path, logs
) -> None:
    dump = spooled_dump(tmp_path)
    uploader = make_uploader(tmp_path, bucket, lambda: client_for(minio))
    uploader.start()
    try:
        wait_for(
            lambda: len(logs.matching("event=upload-failed", "reason=NoSuchBucket")) >= 2,
            "two failed attempts",
        )
        assert dump.profile_path.exists() and dump.metadata_path.exists()
        assert logs.matching("the bucket does not exist", f"kept={dump.profile_path}")
        minio.make_bucket(bucket)
        wait_for(lambda: not dump.profile_path.exists(), "the upload once the bucket exists")
    finally:
        uploader.stop(5)
    assert object_body(minio, bucket, dump.key).startswith(b"\x1f\x8b")


def test_bad_credentials_keep_dump_and_retry(
    minio: MinioServer, bucket: str, tmp_path: Path, logs
) -> None:
    minio.make_bucket(bucket)
    secret = {"value": "wrong-secret"}
    dump = spooled_dump(tmp_path)
    uploader = make_uploader(tmp_path, bucket, lambda: client_for(minio, secret["value"]))
    uploader.start()
    try:
        wait_for(
            lambda: len(logs.matching("event=upload-failed", "reason=SignatureDoesNotMatch")) >= 2,
            "two failed attempts",
        )
        assert dump.profile_path.exists()
        secret["value"] = minio.secret_key  # e.g. the mounted Secret was fixed
        wait_for(lambda: not dump.profile_path.exists(), "the upload with good credentials")
    finally:
        uploader.stop(5)


def test_stopped_server_keeps_dump_until_it_is_back(
    minio: MinioServer, bucket: str, tmp_path: Path, logs
) -> None:
    minio.make_bucket(bucket)
    minio.stop()
    try:
        dump = spooled_dump(tmp_path)
        uploader = make_uploader(tmp_path, bucket, lambda: client_for(minio))
        uploader.start()
        try:
            wait_for(
                lambda: len(logs.matching("event=upload-failed", "reason=Unreachable")) >= 2,
                "two failed attempts",
            )
            assert dump.profile_path.exists()
        finally:
            minio.start()
        wait_for(
            lambda: not dump.profile_path.exists(), "the upload once the server is back", timeout=60
        )
        uploader.stop(5)
    finally:
        minio.start()
    assert object_body(minio, bucket, dump.key).startswith(b"\x1f\x8b")


def test_stop_gives_up_after_grace_and_leaves_dump(
    minio: MinioServer, bucket: str, tmp_path: Path, logs
) -> None:
    dump = spooled_dump(tmp_path)  # the bucket never exists: every attempt fails
    uploader = make_uploader(tmp_path, bucket, lambda: client_for(minio))
    uploader.start()
    started = time.monotonic()
    uploader.stop(1.0)
    assert time.monotonic() - started < 3.0
    assert dump.profile_path.exists()
    assert logs.matching("event=upload-left-in-spool", "dumps=1")


def test_sidecar_uploads_earlier_runs_dumps_and_stops_on_sigterm(
    minio: MinioServer, bucket: str, tmp_path: Path
) -> None:
    minio.make_bucket(bucket)
    dump_dir = tmp_path / "spool"
    left = spooled_dump(dump_dir, pid=7)  # left by "an earlier run"
    empty_proc = tmp_path / "proc"  # nothing to watch: this test is about the upload path
    empty_proc.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO),
        "PROC_ROOT": str(empty_proc),
        "DUMP_DIR": str(dump_dir),
        "BUCKET": bucket,
        "S3_ENDPOINT_URL": minio.endpoint_url,
        "AWS_ACCESS_KEY_ID": minio.access_key,
        "AWS_SECRET_ACCESS_KEY": minio.secret_key,
        "AWS_REGION": "us-east-1",
        "SHUTDOWN_GRACE": "2s",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(lambda: not left.profile_path.exists(), "the earlier run's dump to upload")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, stderr
    assert 'source="left by an earlier run"' in stderr
    assert "event=signal name=SIGTERM" in stderr
    assert object_body(minio, bucket, left.key) == b"\x1f\x8b-profile-7"


def test_an_idle_uploader_does_not_load_boto3(tmp_path: Path) -> None:
    """What `python -m sidecar` imports and builds with BUCKET set and nothing spooled leaves
    boto3 and botocore unloaded (most of the idle watcher's memory); the first client loads
    them. A fresh interpreter, so this test process's own boto3 does not count."""
    script = f"""
import sys, time
import sidecar.__main__
from sidecar.spool import Spool
from sidecar.upload import Uploader, make_s3_client
spool = Spool(__import__("pathlib").Path({str(tmp_path / "spool")!r}), 10, 1 << 20)
spool.prepare()
uploader = Uploader(spool, "dumps", lambda: make_s3_client("http://127.0.0.1:9"))
uploader.start()
time.sleep(0.2)
uploader.stop(1)
idle = sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore"))
make_s3_client("http://127.0.0.1:9")
print(idle, "boto3" in sys.modules and "botocore.client" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "AWS_REGION": "us-east-1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "True"], result.stdout


def test_backoff_doubles_and_never_passes_its_cap(tmp_path: Path) -> None:
    uploader = Uploader(Spool(tmp_path, 1, 1 << 20), "b", lambda: None, 0.5, 8.0)
    for failures in range(1, 80):
        step = min(8.0, 0.5 * 2 ** (failures - 1))
        for _ in range(20):
            assert 0.8 * step <= uploader.delay(failures) <= step


def test_backoff_bounds_come_from_the_config(tmp_path: Path) -> None:
    config = load_config(
        {"DUMP_DIR": str(tmp_path), "UPLOAD_BACKOFF_MIN": "250ms", "UPLOAD_BACKOFF_MAX": "2m"}
    )
    assert (config.upload_backoff_min, config.upload_backoff_max) == (0.25, 120.0)
    with pytest.raises(ConfigError, match="UPLOAD_BACKOFF_MAX='100ms' is below"):
        load_config({"UPLOAD_BACKOFF_MIN": "250ms", "UPLOAD_BACKOFF_MAX": "100ms"})
    defaults = load_config({})
    assert (defaults.upload_backoff_min, defaults.upload_backoff_max) == (1.0, 60.0)
    spool = Spool(tmp_path, 1, 1 << 20)
    assert Uploader(spool, "b", lambda: None).backoff_bounds == (1.0, 60.0)


def test_a_new_client_only_for_failures_it_can_cure(
    minio: MinioServer, bucket: str, tmp_path: Path, logs
) -> None:
    """Making a boto3 client costs ~0.5 s of CPU under the GIL: a missing bucket keeps the
    client, refused credentials get a new one (the chain is read again)."""
    made: list[str] = []
    secret = {"value": minio.secret_key}

    def factory() -> Any:
        made.append(secret["value"])
        return client_for(minio, secret["value"])

    spooled_dump(tmp_path / "missing")
    uploader = make_uploader(tmp_path / "missing", bucket, factory)
    uploader.start()
    try:
        wait_for(lambda: len(logs.matching("reason=NoSuchBucket")) >= 3, "three refusals")
    finally:
        uploader.stop(0)
    assert len(made) == 1

    minio.make_bucket(bucket)
    made.clear()
    secret["value"] = "wrong-secret"
    dump = spooled_dump(tmp_path / "refused")
    uploader = make_uploader(tmp_path / "refused", bucket, factory)
    uploader.start()
    try:
        wait_for(lambda: len(logs.matching("reason=SignatureDoesNotMatch")) >= 3, "refusals")
        secret["value"] = minio.secret_key
        wait_for(lambda: not dump.profile_path.exists(), "the upload with good credentials")
    finally:
        uploader.stop(5)
    assert len(made) >= 4 and made[-1] == minio.secret_key
