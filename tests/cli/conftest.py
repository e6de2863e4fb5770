"""Fixtures for the CLI: real dumps of the demo program in a local folder and a real MinIO."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testinfra.minio import MinioServer, running_minio
from tests.sidecar.conftest import cgroup_v1, leak_binary

from .captures import Captures, capture, upload

__all__ = ["cgroup_v1", "leak_binary"]  # the sidecar's fixtures, used here too
BUCKET = "dumps"

_CLI_ENV = ("OOMDUMP_BUCKET", "OOMDUMP_PREFIX", "OOMDUMP_ENDPOINT_URL", "OOMDUMP_DIR", "GO")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OOMDUMP_* or AWS settings from the developer's shell reach the CLI under test."""
    for name in _CLI_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)


@pytest.fixture(scope="session")
def captures(leak_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Captures:
    return capture(leak_binary, tmp_path_factory.mktemp("cli") / "spool")


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory, captures: Captures) -> Iterator[MinioServer]:
    with running_minio(tmp_path_factory.mktemp("cli-minio") / "data") as server:
        upload(captures, server, BUCKET)
        yield server


@pytest.fixture
def s3(minio: MinioServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The flags that point the CLI at the bucket, credentials in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", minio.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", minio.secret_key)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return ["--bucket", BUCKET, "--endpoint-url", minio.endpoint_url]


@pytest.fixture(scope="session")
def go() -> str:
    path = shutil.which("go")
    if path is None:
        pytest.skip("go tool pprof needs the Go toolchain")
    return path
