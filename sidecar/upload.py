"""Ship spooled dumps to S3 on a thread of their own, retrying with backoff.

A dump's local files are removed only after S3 confirmed both objects. Whatever cannot be
uploaded stays in DUMP_DIR and is tried again. Each dump keeps its own backoff (doubling from
UPLOAD_BACKOFF_MIN, never longer than UPLOAD_BACKOFF_MAX, jittered below the step), so one dump
the store keeps refusing waits alone while the others upload as soon as they are saved. At
start every dump already in the spool is queued, so a previous run's dumps are not lost.

boto3 and botocore are imported when the first S3 client is made (the first upload attempt),
not with this module: they are most of the watcher's resident memory, which an idle watcher
(a healthy pod) never needs. The client still comes from the standard credential chain.
"""

import json
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidecar import log
from sidecar.spool import Dump, Spool

DEFAULT_MIN_BACKOFF = 1.0
DEFAULT_MAX_BACKOFF = 60.0
_JITTER = 0.8  # a delay is drawn from [0.8, 1] x its step, so retries of many dumps spread out
# Failures that a new client can cure (credentials re-read from the chain, e.g. a mounted
# Secret fixed). Any other failure keeps the client: making one costs ~0.5 s of CPU under the
# GIL, which the watch loop needs while a process races its OOM kill.
_NEW_CLIENT_REASONS = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
        "InvalidToken",
        "NoCredentials",
    }
)


def make_s3_client(endpoint_url: str | None) -> Any:
    """An S3 client from the standard credential chain (env, web identity, profile, IMDS)."""
    import boto3
    import botocore.config

    config = botocore.config.Config(
        connect_timeout=2, read_timeout=10, retries={"max_attempts": 1, "mode": "standard"}
    )
    if endpoint_url:
        # S3-compatible stores on an IP or a single host name cannot do virtual-host buckets.
        config = config.merge(botocore.config.Config(s3={"addressing_style": "path"}))
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def describe_error(error: Exception) -> tuple[str, str]:
    """(reason label, message) for an upload failure."""
    try:
        from botocore import exceptions
    except ImportError:  # boto3 itself is missing: the client factory raised this
        return type(error).__name__, str(error)
    if isinstance(error, exceptions.ClientError):
        code = str(error.response.get("Error", {}).get("Code", "unknown"))
        hints = {
            "NoSuchBucket": "the bucket does not exist",
            "InvalidAccessKeyId": "the access key is not known to the server",
            "SignatureDoesNotMatch": "the secret key is wrong",
            "AccessDenied": "the credentials may not write this bucket",
        }
        return code, hints.get(code, str(error))
    if isinstance(error, exceptions.NoCredentialsError):
        return "NoCredentials", "no AWS credentials found in the standard chain"
    if isinstance(error, exceptions.EndpointConnectionError | ConnectionError):
        return "Unreachable", f"the S3 endpoint is unreachable: {error}"
    return type(error).__name__, str(error)


@dataclass
class _Entry:
    dump: Dump
    due: float  # time.monotonic() of the next attempt
    failures: int = 0  # consecutive failures of this dump


class Uploader:
    def __init__(
        self,
        spool: Spool,
        bucket: str,
        client_factory: Callable[[], Any],
        min_backoff: float = DEFAULT_MIN_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        on_result: Callable[[str, str], None] | None = None,
        on_uploaded: Callable[[Dump, dict[str, Any]], None] | None = None,
        on_first_failure: Callable[[Dump, dict[str, Any], str], None] | None = None,
    ) -> None:
        """`on_uploaded(dump, metadata)` after both objects are stored; `on_first_failure(
        dump, metadata, reason)` at a dump's first failed attempt (its retries are logged
        only): what the operator is told, through Events."""
        self._on_uploaded = on_uploaded or (lambda dump, metadata: None)
        self._on_first_failure = on_first_failure or (lambda dump, metadata, reason: None)
        self._spool = spool
        self._bucket = bucket
        self._client_factory = client_factory
        self._client: Any = None
        self._min_backoff = min_backoff
        self._max_backoff = max(min_backoff, max_backoff)
        self._on_result = on_result or (lambda outcome, reason: None)
        self._pending: dict[str, _Entry] = {}
        self._lock = threading.Condition()
        self._stopping = False
        self._deadline = math.inf
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)

    @property
    def backoff_bounds(self) -> tuple[float, float]:
        return self._min_backoff, self._max_backoff

    def start(self) -> None:
        now = time.monotonic()
        for dump in self._spool.dumps():
            log.info("upload-queued", key=dump.key, source="left by an earlier run")
            self._pending[dump.key] = _Entry(dump, now)
        self._thread.start()

    def submit(self, dump: Dump) -> None:
        with self._lock:
            self._pending[dump.key] = _Entry(dump, time.monotonic())
            self._lock.notify()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def stop(self, grace: float) -> None:
        """Finish what can be uploaded within `grace` seconds, then return (SIGTERM)."""
        with self._lock:
            self._stopping = True
            self._deadline = time.monotonic() + grace
            for entry in self._pending.values():  # one more try for each before leaving
                entry.due = 0.0
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

    def delay(self, failures: int) -> float:
        """The wait after a dump's `failures`-th consecutive failure: never above the cap."""
        step = min(self._max_backoff, self._min_backoff * 2 ** min(failures - 1, 60))
        return step * random.uniform(_JITTER, 1.0)

    def _next(self) -> Dump | None:
        with self._lock:
            while True:
                now = time.monotonic()
                if self._stopping and (now >= self._deadline or not self._pending):
                    return None
                wait: float | None = None
                if self._pending:
                    first = min(self._pending.values(), key=lambda entry: entry.due)
                    if first.due <= now:
                        return first.dump
                    wait = first.due - now
                if self._stopping:
                    wait = min(math.inf if wait is None else wait, self._deadline - now)
                self._lock.wait(wait)

    def _run(self) -> None:
        while (dump := self._next()) is not None:
            try:
                uploaded = self._upload(dump)
            except Exception as error:
                self._failed(dump, error)
                continue
            with self._lock:
                self._pending.pop(dump.key, None)
            if uploaded is not None:
                self._on_result("uploaded", "")  # counted before it is said: tests scrape then
                log.info("upload-done", key=dump.key, bucket=self._bucket)
                self._on_uploaded(dump, uploaded)
            else:
                log.warn("upload-skipped", key=dump.key, reason="the profile left DUMP_DIR")

    def _failed(self, dump: Dump, error: Exception) -> None:
        reason, message = describe_error(error)
        if reason in _NEW_CLIENT_REASONS:
            self._client = None
        with self._lock:
            entry = self._pending.get(dump.key)
            if entry is None:
                return
            entry.failures += 1
            failures = entry.failures
            wait = self.delay(failures)
            entry.due = time.monotonic() + wait
        self._on_result("failed", reason)
        log.warn(
            "upload-failed",
            key=dump.key,
            bucket=self._bucket,
            reason=reason,
            detail=message,
            attempt=failures,
            retry_in=f"{wait:.3f}s",
            kept=str(dump.profile_path),
        )
        if failures == 1:
            try:
                document = dump.metadata_path.read_bytes()
            except OSError:
                document = b""
            self._on_first_failure(dump, _metadata(document), reason)

    def _upload(self, dump: Dump) -> dict[str, Any] | None:
        """Put both objects, then remove the local files; the metadata uploaded, or None
        when the profile is gone."""
        if not dump.profile_path.exists():
            return None
        if self._client is None:
            self._client = self._client_factory()
        self._client.put_object(
            Bucket=self._bucket,
            Key=dump.key,
            Body=dump.profile_path.read_bytes(),
            ContentType="application/octet-stream",
        )
        document = b""
        if dump.metadata_path.exists():
            document = dump.metadata_path.read_bytes()
            self._client.put_object(
                Bucket=self._bucket,
                Key=dump.metadata_key,
                Body=document,
                ContentType="application/json",
            )
        # Both objects confirmed: only now do the local files go.
        dump.metadata_path.unlink(missing_ok=True)
        dump.profile_path.unlink(missing_ok=True)
        return _metadata(document)


def _metadata(document: bytes) -> dict[str, Any]:
    """A dump's metadata for a notice; {} when absent or unreadable (a crashed run's)."""
    try:
        parsed = json.loads(document) if document else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
