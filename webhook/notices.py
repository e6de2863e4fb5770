"""`POST /notice`: a watcher's notice about a capture becomes an Event on its own pod.

Who may cause an Event about a pod is decided by the API server: the bearer token must be
the pod's projected ServiceAccount token for the audience `oomdump` (TokenReview), which
names the pod it is bound to. A notice about any other pod, an unbound token or one for
another audience is refused (403); a token the API server does not accept gets 401.
Notices are counted by outcome (`oomdump_webhook_notices_total{outcome}`).

A notice with an id is applied once: a repeat (the watcher retrying after a lost answer)
gets 200 with `"duplicate": true` and leaves the Event alone. This replica's memory
(webhook.recent) answers most repeats before the rate limit and any write, and makes a
repeat that arrives while the first is being written wait for it; a repeat served by the
other replica is caught by the ids on the Event itself (webhook.kubeapi.NOTICE_IDS).
"""

import asyncio
import json
import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response

from webhook import notice as notices
from webhook.annotations import STATUS
from webhook.body import read_capped
from webhook.metrics import Metrics
from webhook.notice import AUDIENCE, BadNotice, Notice
from webhook.ratelimit import RateLimiter
from webhook.recent import Applied, RecentNotices
from webhook.reviewed import ApiUnavailable, Reviewed

MAX_TOKEN_CHARS = 16 * 1024
MAX_IN_FLIGHT = 8  # notices being checked or written at once; more are told to retry
# How long a repeat waits for the same notice in flight: about one API request's deadline
# (kubeapi.REQUEST_TIMEOUT), which covers a first write in the common case, and short,
# because a waiting repeat holds one of the MAX_IN_FLIGHT places.
CLAIM_WAIT = 5.0
DUPLICATE = "duplicate"
POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"
log = logging.getLogger("webhook.notice")

if TYPE_CHECKING:  # the Kubernetes client loads only where notices are served
    from webhook.kubeapi import NoticeApi


class Refusal(Exception):
    def __init__(self, status: int, outcome: str, message: str, retry_after: float = 0) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.message = message
        self.retry_after = retry_after


@dataclass
class NoticeService:
    api: "NoticeApi | None"  # None: no API credentials, notices are refused with 503
    limiter: RateLimiter
    metrics: Metrics
    recent: RecentNotices = field(default_factory=RecentNotices)
    _in_flight: int = 0

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            outcome, answer = await self._handle(request)
        except Refusal as refusal:
            outcome = refusal.outcome
            log.warning("notice refused (%d %s): %s", refusal.status, outcome, refusal.message)
            headers = {}
            if refusal.status == 401:
                headers["WWW-Authenticate"] = f'Bearer realm="{AUDIENCE}"'
            if refusal.retry_after:
                headers["Retry-After"] = str(max(1, round(refusal.retry_after)))
            body = {"error": outcome, "message": refusal.message}
            response = Response(
                json.dumps(body).encode(),
                status_code=refusal.status,
                media_type="application/json",
                headers=headers,
            )
        else:
            response = Response(json.dumps(answer).encode(), media_type="application/json")
        self.metrics.notices.labels(outcome).inc()
        self.metrics.notice_latency.observe(time.perf_counter() - started)
        return response

    async def _handle(self, request: Request) -> tuple[str, dict[str, Any]]:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise Refusal(415, "bad-request", "Content-Type must be application/json")
        token = _bearer(request.headers.get("authorization", ""))
        body = await read_capped(request, notices.MAX_BODY_BYTES)
        if body is None:
            limit = f"{notices.MAX_BODY_BYTES // 1024} KiB"
            raise Refusal(413, "bad-request", f"the notice exceeds the {limit} limit")
        try:
            notice = notices.parse(body)
        except BadNotice as error:
            raise Refusal(400, "bad-request", str(error)) from None
        api = self.api
        if api is None:
            raise Refusal(503, "not-configured", "this webhook has no API credentials")
        if self._in_flight >= MAX_IN_FLIGHT:
            raise Refusal(503, "busy", "too many notices in progress", retry_after=1)
        self._in_flight += 1
        try:
            reviewed = await asyncio.to_thread(_unavailable_as_refusal, api.review, token, AUDIENCE)
            uid = _check_identity(reviewed, notice)
            result, name, count = await self._apply_once(api, notice, uid)
        finally:
            self._in_flight -= 1
        log.info(
            "notice %s: event %s/%s count=%d reason=%s id=%s", result, notice.namespace, name,
            count, notice.reason, notice.id or "-",
        )  # fmt: skip
        answer = {"result": result, "event": name, "count": count, DUPLICATE: result == DUPLICATE}
        return result, answer

    async def _apply_once(self, api: "NoticeApi", notice: Notice, uid: str) -> tuple[str, str, int]:
        """Apply `notice` unless its id was applied already (then "duplicate", the Event
        untouched); the claim on the id is held until the write ends either way."""
        if notice.id is None:
            return await self._apply(api, notice, uid)
        earlier = await self._claim(uid, notice.id)
        if earlier is not None:
            return DUPLICATE, earlier.event, earlier.count
        try:
            result, name, count = await self._apply(api, notice, uid)
        except BaseException:  # refused, unavailable or cancelled: a retry may apply it
            self.recent.release(uid, notice.id)
            raise
        self.recent.applied(uid, notice.id, Applied(name, count))
        return result, name, count

    async def _claim(self, uid: str, notice_id: str) -> Applied | None:
        """The earlier application of this notice, or None once the claim is ours."""
        deadline = time.monotonic() + CLAIM_WAIT
        while True:
            held = self.recent.claim(uid, notice_id)
            if not isinstance(held, Future):
                return held
            remaining = max(0.0, deadline - time.monotonic())
            done, _ = await asyncio.wait({asyncio.wrap_future(held)}, timeout=remaining)
            if not done:
                raise Refusal(
                    503, "busy", "the same notice is still being written; try again",
                    retry_after=1,
                )  # fmt: skip

    async def _apply(self, api: "NoticeApi", notice: Notice, uid: str) -> tuple[str, str, int]:
        wait = self.limiter.allow(uid)
        if wait:
            raise Refusal(
                429, "rate-limited",
                f"more than {self.limiter.burst} notices for pod {notice.namespace}/"
                f"{notice.pod} in a short time; next in {wait:.0f}s",
                retry_after=wait,
            )  # fmt: skip
        return await asyncio.to_thread(_unavailable_as_refusal, _write, api, notice, uid)


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Refusal(401, "unauthenticated", "an Authorization: Bearer <token> header is needed")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable():
        raise Refusal(401, "unauthenticated", "the bearer token is not a token")
    return token


def _unavailable_as_refusal(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except ApiUnavailable as error:
        raise Refusal(503, "unavailable", str(error), retry_after=2) from None


def _check_identity(reviewed: Reviewed, notice: Notice) -> str:
    """The bound pod's uid when the token is that very pod's; Refusal otherwise."""
    if not reviewed.authenticated:
        detail = f": {reviewed.error}" if reviewed.error else ""
        raise Refusal(
            401, "unauthenticated", f"the token is not valid for the audience {AUDIENCE}{detail}"
        )
    if AUDIENCE not in reviewed.audiences:
        raise Refusal(403, "forbidden", f"the token is not for the audience {AUDIENCE}")
    parts = reviewed.username.split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
        raise Refusal(403, "forbidden", "the token is not a ServiceAccount token")
    pod_name, pod_uid = reviewed.first(POD_NAME_KEY), reviewed.first(POD_UID_KEY)
    if not pod_name or not pod_uid:
        raise Refusal(
            403, "forbidden", "the token is not bound to a pod (use the pod's projected token)"
        )
    if (parts[2], pod_name) != (notice.namespace, notice.pod):
        raise Refusal(
            403, "forbidden",
            f"the token belongs to pod {parts[2]}/{pod_name}, not to {notice.namespace}/"
            f"{notice.pod}: a watcher may only report about its own pod",
        )  # fmt: skip
    return pod_uid


def _statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    every: list[dict[str, Any]] = []
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        every += [item for item in status.get(key) or [] if isinstance(item, dict)]
    return every


def _write(api: "NoticeApi", notice: Notice, uid: str) -> tuple[str, str, int]:
    pod = api.pod(notice.namespace, notice.pod)
    metadata = (pod or {}).get("metadata") or {}
    if pod is None or metadata.get("uid") != uid:
        raise Refusal(403, "forbidden", f"pod {notice.namespace}/{notice.pod} is gone")
    if STATUS not in (metadata.get("annotations") or {}):
        raise Refusal(
            403, "forbidden", f"pod {notice.namespace}/{notice.pod} has no oomdump watcher"
        )
    container = notices.container_of(notice.cgroup, _statuses(pod))
    name = notices.event_name(notice.pod, uid, notice, container)
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": notice.namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": notice.pod,
            "namespace": notice.namespace,
            "uid": uid,
        },
        "reason": notice.reason,
        "message": notices.message(notice, container),
        "type": notice.event_type,
    }
    result, count = api.record(event, notice.id)
    return result, name, count
