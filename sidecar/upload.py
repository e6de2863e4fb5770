"""Ship spooled dumps to S3 on a thread of their own, retrying with backoff.

A dump's local files are removed only after S3 confirmed both objects. Whatever cannot be
uploaded stays in DUMP_DIR and is tried again (exponential backoff up to `max_backoff`); at
start every dump already in the spool is queued, so a previous run's dumps are not lost.
"""

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from sidecar import log
from sidecar.spool import Dump, Spool

BOTO_CONFIG = botocore.config.Config(
    connect_timeout=2, read_timeout=10, retries={"max_attempts": 1, "mode": "standard"}
)


def make_s3_client(endpoint_url: str | None) -> Any:
    """An S3 client from the standard credential chain (env, web identity, profile, IMDS)."""
    config = BOTO_CONFIG
    if endpoint_url:
        # S3-compatible stores on an IP or a single host name cannot do virtual-host buckets.
        config = config.merge(botocore.config.Config(s3={"addressing_style": "path"}))
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def describe_error(error: Exception) -> tuple[str, str]:
    """(reason label, message) for an upload failure."""
    if isinstance(error, botocore.exceptions.ClientError):
        code = str(error.response.get("Error", {}).get("Code", "unknown"))
        hints = {
            "NoSuchBucket": "the bucket does not exist",
            "InvalidAccessKeyId": "the access key is not known to the server",
            "SignatureDoesNotMatch": "the secret key is wrong",
            "AccessDenied": "the credentials may not write this bucket",
        }
        return code, hints.get(code, str(error))
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return "NoCredentials", "no AWS credentials found in the standard chain"
    if isinstance(error, botocore.exceptions.EndpointConnectionError | ConnectionError):
        return "Unreachable", f"the S3 endpoint is unreachable: {error}"
    if isinstance(error, botocore.exceptions.BotoCoreError):
        return type(error).__name__, str(error)
    return type(error).__name__, str(error)


class Uploader:
    def __init__(
        self,
        spool: Spool,
        bucket: str,
        client_factory: Callable[[], Any],
        min_backoff: float = 1.0,
        max_backoff: float = 60.0,
        on_result: Callable[[str, str], None] | None = None,
    ) -> None:
        self._spool = spool
        self._bucket = bucket
        self._client_factory = client_factory
        self._client: Any = None
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._on_result = on_result or (lambda outcome, reason: None)
        self._pending: dict[str, Dump] = {}
        self._lock = threading.Condition()
        self._stopping = False
        self._deadline = float("inf")
        self._backoff = 0.0
        self._failures = 0  # consecutive failures, for the backoff
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)

    def start(self) -> None:
        for dump in self._spool.dumps():
            log.info("upload-queued", key=dump.key, source="left by an earlier run")
            self._pending[dump.key] = dump
        self._thread.start()

    def submit(self, dump: Dump) -> None:
        with self._lock:
            self._pending[dump.key] = dump
            self._lock.notify()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def stop(self, grace: float) -> None:
        """Finish what can be uploaded within `grace` seconds, then return (SIGTERM)."""
        with self._lock:
            self._stopping = True
            self._deadline = time.monotonic() + grace
            self._backoff = 0.0  # one more try for each pending dump before leaving
            self._lock.notify()
        self._thread.join(grace + 1.0)
        left = self.pending()
        if left:
            log.warn(
                "upload-left-in-spool",
                dumps=left,
                dump_dir=self._spool.root,
                reason="shutdown grace ended; they upload on the next start",
            )

    def _next(self) -> Dump | None:
        with self._lock:
            while True:
                if self._stopping and time.monotonic() >= self._deadline:
                    return None
                if self._pending and self._backoff <= 0:
                    return next(iter(self._pending.values()))
                if self._stopping and not self._pending:
                    return None
                wait = self._backoff if self._pending else None
                if self._stopping:
                    wait = min(wait or 0.0, self._deadline - time.monotonic())
                started = time.monotonic()
                self._lock.wait(wait)
                self._backoff = max(0.0, self._backoff - (time.monotonic() - started))

    def _run(self) -> None:
        while (dump := self._next()) is not None:
            try:
                self._upload(dump)
            except Exception as error:
                reason, message = describe_error(error)
                self._client = None  # re-read credentials and endpoint on the next try
                with self._lock:
                    self._failures += 1
                    step = self._min_backoff * 2 ** min(self._failures - 1, 20)
                    self._backoff = min(self._max_backoff, step) * random.uniform(0.8, 1.2)
                    # Move the failed dump to the back so one bad dump cannot starve others.
                    if dump.key in self._pending:
                        self._pending[dump.key] = self._pending.pop(dump.key)
                log.warn(
                    "upload-failed",
                    key=dump.key,
                    bucket=self._bucket,
                    reason=reason,
                    detail=message,
                    retry_in=f"{self._backoff:.1f}s",
                    kept=str(dump.profile_path),
                )
                self._on_result("failed", reason)
                continue
            with self._lock:
                self._pending.pop(dump.key, None)
                self._failures = 0
            log.info("upload-done", key=dump.key, bucket=self._bucket)
            self._on_result("uploaded", "")

    def _upload(self, dump: Dump) -> None:
        if self._client is None:
            self._client = self._client_factory()
        if not dump.profile_path.exists():
            with self._lock:
                self._pending.pop(dump.key, None)
            return
        self._client.put_object(
            Bucket=self._bucket,
            Key=dump.key,
            Body=dump.profile_path.read_bytes(),
            ContentType="application/octet-stream",
        )
        if dump.metadata_path.exists():
            self._client.put_object(
                Bucket=self._bucket,
                Key=dump.metadata_key,
                Body=dump.metadata_path.read_bytes(),
                ContentType="application/json",
            )
        # Both objects confirmed: only now do the local files go.
        dump.metadata_path.unlink(missing_ok=True)
        dump.profile_path.unlink(missing_ok=True)
