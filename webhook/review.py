"""AdmissionReview decoding and encoding, `admission.k8s.io/v1` and `v1beta1`.

Decoding refuses what the API server never sends with a `BadReview` whose message says
what is wrong; the HTTP layer turns it into a 400.
"""

import base64
import json
from dataclasses import dataclass
from typing import Any

from webhook import jsonio

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


class BadReview(ValueError):
    """The body is not an AdmissionReview request we can answer."""


@dataclass(frozen=True)
class AdmissionRequest:
    api_version: str
    uid: str
    group: str
    kind: str
    operation: str
    namespace: str | None
    name: str | None
    object: Any


def decode(body: bytes) -> AdmissionRequest:
    try:
        review = jsonio.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadReview(f"body is not valid JSON: {error}") from None
    except RecursionError:
        raise BadReview("body is not valid JSON: nested too deeply") from None
    if not isinstance(review, dict):
        raise BadReview("body must be a JSON object (an AdmissionReview)")
    api_version = review.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise BadReview(f"apiVersion {api_version!r} is not one of {', '.join(API_VERSIONS)}")
    if review.get("kind") != "AdmissionReview":
        raise BadReview(f"kind {review.get('kind')!r} is not AdmissionReview")
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview("AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid is missing or not a non-empty string")
    kind = request.get("kind")
    if not isinstance(kind, dict) or not isinstance(kind.get("kind"), str):
        raise BadReview("request.kind must be an object with a string kind")
    operation = request.get("operation")
    if not isinstance(operation, str):
        raise BadReview("request.operation is missing")
    namespace = request.get("namespace")
    name = request.get("name")
    return AdmissionRequest(
        api_version=api_version,
        uid=uid,
        group=kind.get("group") or "",
        kind=kind["kind"],
        operation=operation,
        namespace=namespace if isinstance(namespace, str) and namespace else None,
        name=name if isinstance(name, str) and name else None,
        object=request.get("object"),
    )


def encode(
    request: AdmissionRequest,
    *,
    allowed: bool,
    patch: list[dict[str, Any]] | None = None,
    warnings: tuple[str, ...] = (),
    message: str = "",
) -> bytes:
    response: dict[str, Any] = {"uid": request.uid, "allowed": allowed}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(jsonio.dumps(patch)).decode("ascii")
    if not allowed:
        response["status"] = {"code": 400, "reason": "BadRequest", "message": message}
    if warnings:
        response["warnings"] = list(warnings)
    review = {"apiVersion": request.api_version, "kind": "AdmissionReview", "response": response}
    return jsonio.dumps(review)
