"""The HTTP edge: FastAPI routes around the pure admission core."""

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request, Response

from webhook import notify_ca
from webhook.admit import Decision, admit
from webhook.body import read_capped
from webhook.config import DefaultsError, InjectConfig, Notify, load_defaults
from webhook.inject import MalformedPod, warning
from webhook.metrics import CONTENT_TYPE, Metrics
from webhook.notices import NoticeService
from webhook.review import AdmissionRequest, BadReview, decode, encode
from webhook.tls import ServingCertificate

MAX_BODY_BYTES = 6 * 1024 * 1024
INTERNAL_ERROR = "internal-error"
log = logging.getLogger("webhook")


@dataclass
class ServerState:
    config: InjectConfig
    certificate: ServingCertificate | None = None
    defaults_file: Path | None = None
    reload_interval: float = 1.0
    metrics: Metrics = field(default_factory=Metrics)
    notices: NoticeService | None = None
    # With both set (and notices served), injected watchers are told to send notices to
    # `notify_url`, trusting the CA bundle in `notify_ca_file`.
    notify_url: str | None = None
    notify_ca_file: Path | None = None
    _defaults_text: bytes | str | None = None
    _ca_seen: bytes | str | None = None

    def check_files(self) -> None:
        """Pick up a rotated certificate or a changed defaults file (on the event loop)."""
        if self.certificate is not None:
            changed = self.certificate.check()
            if changed is not None:
                result = "ok" if changed else "refused"
                self.metrics.reloads.labels("certificate", result).inc()
            if changed:
                self.metrics.cert_not_after.set(self.certificate.loaded.not_after)
        if self.defaults_file is not None:
            self._check_defaults(self.defaults_file)
        if self.notify_url is not None and self.notify_ca_file is not None:
            self._check_notify_ca(self.notify_url, self.notify_ca_file)

    def _check_notify_ca(self, url: str, path: Path) -> None:
        """A changed CA bundle goes into the notify settings of pods injected from now on;
        a bad one is refused (logged, counted) and the last good one stays; with none ever
        good, watchers get no notify settings and the status annotation says why."""
        data = notify_ca.read(path)
        if data == self._ca_seen:
            return
        self._ca_seen = data
        pem, problem = notify_ca.bundle(data, path)
        if pem is not None:
            self.config = dataclasses.replace(self.config, notify=Notify(url, pem))
            self.metrics.reloads.labels("notify-ca", "ok").inc()
            log.info("notify CA bundle loaded from %s", path)
            return
        self.metrics.reloads.labels("notify-ca", "refused").inc()
        if self.config.notify is None:
            self.config = dataclasses.replace(self.config, notify_off=f"off: {problem}")
            log.warning("watchers get no notify settings: %s", problem)
        else:
            log.warning("notify CA bundle not reloaded, keeping the previous one: %s", problem)

    def _check_defaults(self, path: Path) -> None:
        """A changed file is loaded; a deleted or invalid one is refused once (logged and
        counted) and the last good defaults keep serving until a valid file appears.

        Readiness stays up meanwhile, on purpose: every replica reads the same ConfigMap,
        so an unready webhook would mean every replica unready, and with
        `failurePolicy: Ignore` pods created without any watcher, which is worse than
        pods with the previous defaults. `oomdump_webhook_defaults_stale` says it instead.
        """
        try:
            text: bytes | str = path.read_bytes()
        except OSError as error:
            text = f"unreadable: {error}"
        if text == self._defaults_text:
            return
        first = self._defaults_text is None
        self._defaults_text = text
        if first:
            return  # loaded by main() before the server started
        try:
            defaults = load_defaults(path)
        except DefaultsError as error:
            log.warning("defaults file not reloaded, keeping the previous defaults: %s", error)
            self.metrics.reloads.labels("defaults", "refused").inc()
            self.metrics.defaults_stale.set(1)
            return
        self.config = dataclasses.replace(self.config, defaults=defaults)
        self.metrics.reloads.labels("defaults", "ok").inc()
        self.metrics.defaults_stale.set(0)
        log.info("sidecar defaults reloaded from %s", path)


def _error(status: int, reason: str, message: str, state: ServerState) -> Response:
    state.metrics.requests.labels("bad-request").inc()
    state.metrics.bad_requests.labels(reason).inc()
    log.warning("refused request (%d %s): %s", status, reason, message)
    body = json.dumps({"error": reason, "message": message}).encode()
    return Response(body, status_code=status, media_type="application/json")


def create_app(state: ServerState) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.check_files()
        task = asyncio.create_task(_watch_files(state))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="oomdump webhook", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = state
    if state.certificate is not None:
        state.metrics.cert_not_after.set(state.certificate.loaded.not_after)

    @app.post("/mutate")
    async def mutate(request: Request) -> Response:
        started = time.perf_counter()
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            return _error(
                415, "content-type", f"Content-Type must be application/json, not {content_type!r}",
                state,
            )  # fmt: skip
        body = await read_capped(request, MAX_BODY_BYTES)
        if body is None:
            limit = f"{MAX_BODY_BYTES // (1024 * 1024)} MiB"
            return _error(413, "too-large", f"body exceeds the {limit} limit", state)
        try:
            review = decode(body)
        except BadReview as error:
            return _error(400, "malformed", str(error), state)
        except Exception:  # no review to answer: the body is refused, never a 500
            log.exception("decoding a review failed")
            return _error(400, "malformed", "the body is not an AdmissionReview we can read", state)
        try:
            decision = admit(review, state.config)
        except MalformedPod as error:
            return _error(400, "malformed", str(error), state)
        except RecursionError:
            return _error(400, "malformed", "the AdmissionReview is nested too deeply", state)
        except Exception:
            # A bug of ours, not the sender's fault: admit the pod as it is (what
            # failurePolicy Ignore would do anyway), say so, and keep the bug visible.
            log.exception("answering a review failed; admitting the pod without the watcher")
            decision = _admitted_unchanged(review)
        _record(state, review, decision, time.perf_counter() - started)
        return Response(decision.body, media_type="application/json")

    @app.post("/notice")
    async def notice(request: Request) -> Response:
        if state.notices is None:
            body = b'{"error":"not-configured","message":"this webhook serves no notices"}'
            return Response(body, status_code=503, media_type="application/json")
        return await state.notices.handle(request)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b"ok\n", media_type="text/plain")

    @app.get("/readyz")
    async def readyz() -> Response:
        return Response(b"ok\n", media_type="text/plain")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    return app


def _admitted_unchanged(review: AdmissionRequest) -> Decision:
    text = "the webhook failed on this pod (logged)"
    body = encode(review, allowed=True, warnings=(warning(INTERNAL_ERROR, text),))
    return Decision("skipped", INTERNAL_ERROR, text, [], body)


def _field(value: str | None) -> str:
    """A log field as one token: quoted when it holds a space, `=` or `"` (the sender's
    uid and names could otherwise pose as other fields of the line)."""
    if value is None:
        return "-"
    return value if value and not any(c in value for c in ' ="') else json.dumps(value)


def _record(state: ServerState, review: AdmissionRequest, decision: Decision, took: float) -> None:
    """Every decision reaches the metrics (reason as a label) and the log."""
    metrics = state.metrics
    metrics.requests.labels(decision.result).inc()
    if decision.result == "injected":
        metrics.injections.labels(state.config.mode).inc()
    elif decision.result == "skipped":
        metrics.skips.labels(decision.reason).inc()
    else:
        metrics.denials.labels(decision.reason).inc()
    metrics.latency.observe(took)
    # Skips and denials always reach the log; injections (the bulk) only at debug level,
    # where logging them would cost ~8% of the request's CPU time (measured).
    level = logging.DEBUG if decision.result == "injected" else logging.INFO
    if log.isEnabledFor(level):
        log.log(
            level, "uid=%s namespace=%s name=%s result=%s reason=%s %s",
            _field(review.uid), _field(review.namespace), _field(review.name), decision.result,
            decision.reason, decision.message,
        )  # fmt: skip


async def _watch_files(state: ServerState) -> None:
    while True:
        await asyncio.sleep(state.reload_interval)
        try:
            state.check_files()
        except Exception:  # a reload bug must not stop future reloads or the server
            state.metrics.file_check_errors.inc()
            log.exception("checking the certificate and defaults files failed")
