"""One admission decision: which requests reach the injector, and the patch it implies."""

from dataclasses import dataclass
from typing import Any

from webhook.config import InjectConfig
from webhook.inject import Outcome, Result, inject, skipped
from webhook.patch import make_patch
from webhook.review import AdmissionRequest, encode

NOT_A_POD = "not-a-pod"
NOT_CREATE = "not-create"


@dataclass(frozen=True)
class Decision:
    result: Result
    reason: str
    message: str
    patch: list[dict[str, Any]]
    body: bytes  # the encoded AdmissionReview response


def admit(request: AdmissionRequest, config: InjectConfig) -> Decision:
    """Answer one decoded request; MalformedPod escapes for the caller to report as a 400."""
    outcome = _outcome(request, config)
    patch: list[dict[str, Any]] = []
    if outcome.result == "injected":
        patch = make_patch(request.object, outcome.pod)
    body = encode(
        request,
        allowed=outcome.result != "denied",
        patch=patch,
        warnings=outcome.warnings,
        message=outcome.message,
    )
    return Decision(outcome.result, outcome.reason, outcome.message, patch, body)


def _outcome(request: AdmissionRequest, config: InjectConfig) -> Outcome:
    if request.group != "" or request.kind != "Pod":
        kind = f"{request.group}/{request.kind}" if request.group else request.kind
        return skipped(request.object, NOT_A_POD, f"kind {kind} is not a Pod")
    if request.operation != "CREATE":
        return skipped(request.object, NOT_CREATE, f"operation {request.operation} is not CREATE")
    return inject(request.object, config, request.namespace)
