"""The MinIO harness: a real S3 server process that stores, returns and survives a restart."""

from pathlib import Path

import pytest

from testinfra.minio import running_minio

pytestmark = pytest.mark.s3


def test_minio_stores_returns_and_keeps_an_object_across_a_restart(tmp_path: Path) -> None:
    with running_minio(tmp_path / "data") as server:
        assert server.endpoint_url.startswith("http://127.0.0.1:")
        server.make_bucket("dumps")
        s3 = server.client()
        s3.put_object(Bucket="dumps", Key="ns/pod/heap.pb.gz", Body=b"\x1f\x8b heap")

        port = server.port
        server.stop()
        assert not server.running
        server.start()

        assert server.port == port
        body = server.client().get_object(Bucket="dumps", Key="ns/pod/heap.pb.gz")["Body"].read()
        assert body == b"\x1f\x8b heap"
    assert not server.running


def test_minio_refuses_wrong_credentials(tmp_path: Path) -> None:
    import botocore.exceptions

    with running_minio(tmp_path / "data") as server:
        server.secret_key = "not-the-secret"
        with pytest.raises(botocore.exceptions.ClientError, match="SignatureDoesNotMatch"):
            server.make_bucket("dumps")
