"""Tell the operator: a short notice to the webhook for each capture and each failed one,
which the webhook turns into an Event on this pod (`kubectl describe pod` shows it).

The notice is authenticated with the pod's projected ServiceAccount token (audience
`oomdump`, mounted by the injector); the webhook checks it with a TokenReview, so only
this pod's watcher can cause an Event about this pod, and the app's ServiceAccount gains
no right. Notices go on a thread of their own with a bounded queue and a deadline per
request: a slow or absent webhook never delays a capture (a notice that cannot be sent is
logged and dropped; the dump itself is safe in the spool). `ssl` and `http.client` are
imported with the first notice, not at start.

Each notice has an id of its own, sent with every attempt: when the webhook wrote the
Event but its answer was lost (a timeout, a reset connection), the retry is answered
`"duplicate": true` and the Event's count rises once, not twice.
"""

import json
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sidecar import log

CAPTURED = "HeapProfileCaptured"
FAILED = "HeapProfileFailed"
QUEUE_SIZE = 64
ATTEMPTS = 3
TOKEN_MAX_BYTES = 64 * 1024
ANSWER_MAX_BYTES = 64 * 1024
ID_BYTES = 16  # 128 random bits: no two notices of any pod share an id


def new_id() -> str:
    return os.urandom(ID_BYTES).hex()  # what secrets.token_hex does, without its imports


@dataclass(frozen=True)
class Notice:
    reason: str  # CAPTURED or FAILED
    pid: int
    comm: str
    cgroup: str  # the process's cgroup path: the webhook names the container from it
    usage: int
    limit: int
    percent: float | None
    location: str  # s3://bucket/key, or the pod-local path until uploaded
    detail: str = ""  # why, for FAILED
    top: tuple[dict[str, Any], ...] = ()  # the top functions by inuse_space, when read
    id: str = field(default_factory=new_id)  # made once, the same in every retry

    def body(self, pod: str, namespace: str) -> bytes:
        return json.dumps(
            {
                "reason": self.reason,
                "pod": pod,
                "namespace": namespace,
                "pid": self.pid,
                "comm": self.comm,
                "cgroup": self.cgroup,
                "usage": self.usage,
                "limit": self.limit,
                "percent": self.percent,
                "location": self.location,
                "detail": self.detail,
                "top": list(self.top),
                "id": self.id,
            }
        ).encode()


class Notifier:
    """Sends notices to `url` (https://<webhook service>/notice) on a thread of its own."""

    def __init__(
        self,
        url: str,
        token_file: Path,
        ca_pem: str | None,
        pod: str,
        namespace: str,
        timeout: float = 2.0,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"NOTIFY_URL={url!r} must be an https:// URL")
        self._host = parts.hostname
        self._port = parts.port or 443
        self._path = parts.path or "/notice"
        self._token_file = token_file
        self._ca_pem = ca_pem
        self._pod = pod
        self._namespace = namespace
        self._timeout = timeout
        self._on_result = on_result or (lambda outcome: None)
        self._queue: queue.Queue[Notice | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def send(self, notice: Notice) -> None:
        """Queue `notice`; never blocks (a full queue drops it, said in the log)."""
        try:
            self._queue.put_nowait(notice)
        except queue.Full:
            log.warn("notice-dropped", pid=notice.pid, reason="queue-full", kind=notice.reason)
            self._on_result("dropped")

    def stop(self, grace: float) -> None:
        """Send what is queued within `grace` seconds, then return."""
        try:
            self._queue.put(None, timeout=grace)
        except queue.Full:
            return
        self._thread.join(grace)

    def _run(self) -> None:
        while True:
            notice = self._queue.get()
            if notice is None:
                return
            self._deliver(notice)

    def _deliver(self, notice: Notice) -> None:
        error = ""
        for attempt in range(ATTEMPTS):
            try:
                status, answer = self._post(notice.body(self._pod, self._namespace))
            except (OSError, ValueError) as failure:  # ssl errors are OSErrors
                error = f"{type(failure).__name__}: {failure}"
            else:
                if status == 200:
                    # A duplicate: an earlier attempt was applied but its answer was lost.
                    repeat = "true" if _said_duplicate(answer) else None
                    log.info(
                        "notice-sent", pid=notice.pid, kind=notice.reason, id=notice.id,
                        duplicate=repeat,
                    )  # fmt: skip
                    self._on_result("sent")
                    return
                error = f"HTTP {status}: {answer[:200]!r}"
                if 400 <= status < 500:
                    break  # refused: trying again changes nothing
            time.sleep(min(1.0, 0.2 * 2**attempt))
        log.warn("notice-failed", pid=notice.pid, kind=notice.reason, id=notice.id, reason=error)
        self._on_result("failed")

    def _token(self) -> str:
        with open(self._token_file, "rb") as handle:  # re-read: the kubelet rotates it
            token = handle.read(TOKEN_MAX_BYTES).decode().strip()
        if not token:
            raise ValueError(f"{self._token_file} is empty")
        return token

    def _post(self, body: bytes) -> tuple[int, bytes]:
        import http.client  # with the first notice: ssl weighs ~5 MiB of the idle watcher
        import ssl

        context = ssl.create_default_context(cadata=self._ca_pem) if self._ca_pem else None
        if context is None:
            context = ssl.create_default_context()
        connection = http.client.HTTPSConnection(
            self._host, self._port, timeout=self._timeout, context=context
        )
        watchdog = threading.Timer(self._timeout, connection.close)
        watchdog.daemon = True
        watchdog.start()
        try:
            connection.request(
                "POST",
                self._path,
                body=body,
                headers={
                    "Authorization": f"Bearer {self._token()}",
                    "Content-Type": "application/json",
                },
            )
            response = connection.getresponse()
            return response.status, response.read(ANSWER_MAX_BYTES)
        finally:
            watchdog.cancel()
            connection.close()


def _said_duplicate(answer: bytes) -> bool:
    try:
        document = json.loads(answer)
    except ValueError:  # an older webhook's or a truncated answer: the notice was taken
        return False
    return isinstance(document, dict) and document.get("duplicate") is True
