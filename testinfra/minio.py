"""A real S3 server for tests: MinIO built from its Go module, started on loopback.

MinIO publishes no version tags Go understands (its releases are `RELEASE.<date>` tags), so
the pin is a pseudo-version: the last commit of github.com/minio/minio. The first build
fetches its modules through the proxy and compiles for several minutes; later runs reuse
the binary cached under ~/.cache/oomdump.
"""

import os
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from testinfra.gobuild import build_from_module
from testinfra.netutil import free_port
from testinfra.process import start_process, stop_process, wait_until

MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
READY_TIMEOUT = 60.0

_WRAPPER_GO_MOD = f"""module oomdump.test/minio

go 1.24.0

require {MINIO_MODULE} {MINIO_VERSION}
"""


def minio_binary() -> Path:
    """The cached MinIO server binary, built on first use (several minutes, cold)."""
    return build_from_module("minio", MINIO_VERSION, _WRAPPER_GO_MOD, MINIO_MODULE)


class MinioServer:
    """One MinIO process serving `data_dir` on a fixed loopback port; restartable."""

    def __init__(self, binary: Path, data_dir: Path, log_path: Path) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.access_key = "oomdump-" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(16)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start (or restart) on the same port and data directory; return once it is live."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_CI_CD": "1",
        }
        args = [
            str(self.binary),
            "server",
            "--quiet",
            "--address",
            f"127.0.0.1:{self.port}",
            "--console-address",
            f"127.0.0.1:{free_port()}",
            str(self.data_dir),
        ]
        self._process = start_process(args, self.log_path, env)
        try:
            wait_until(
                self._live,
                what=f"minio on port {self.port}",
                timeout=timeout,
                process=self._process,
                log_path=self.log_path,
            )
        except BaseException:
            self.stop()
            raise

    def _live(self) -> bool:
        # `ready`, not `live`: live answers 200 before the server is initialized, when a
        # request still gets XMinioServerNotInitialized.
        url = f"{self.endpoint_url}/minio/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        """Stop the process group (SIGTERM, then SIGKILL after a grace period)."""
        process, self._process = self._process, None
        stop_process(process)

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style addressing)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)


@contextmanager
def running_minio(data_dir: Path) -> Iterator[MinioServer]:
    """A live MinIO serving `data_dir`, always stopped on exit. Its log is next to the data."""
    data_dir.mkdir(parents=True, exist_ok=True)
    server = MinioServer(minio_binary(), data_dir, data_dir.parent / f"{data_dir.name}.minio.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
