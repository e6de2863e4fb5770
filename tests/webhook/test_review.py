"""AdmissionReview decoding (refusals with clear messages) and encoding."""

import base64
import json

import pytest

from webhook.review import AdmissionRequest, BadReview, decode, encode


def review(**request: object) -> bytes:
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "shop",
            "object": {"metadata": {}, "spec": {"containers": []}},
            **request,
        },
    }
    return json.dumps(body).encode()


BAD = [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[]", "JSON object"),
    (b'{"apiVersion": "admission.k8s.io/v2", "kind": "AdmissionReview"}', "apiVersion"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}', "kind 'Pod'"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "no request"),
    (
        b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": 5}',
        "no request",
    ),
    (review(uid=None), "request.uid"),
    (review(uid=""), "request.uid"),
    (review(uid=7), "request.uid"),
    (review(kind="Pod"), "request.kind"),
    (review(operation=None), "request.operation"),
]


@pytest.mark.parametrize(("body", "message"), BAD)
def test_bad_bodies_are_refused_with_a_clear_message(body: bytes, message: str) -> None:
    with pytest.raises(BadReview, match=message):
        decode(body)


def test_decode_reads_the_fields_the_decision_needs() -> None:
    request = decode(review(namespace="", name="web-0"))
    assert request.uid == "u-1"
    assert (request.group, request.kind, request.operation) == ("", "Pod", "CREATE")
    assert request.namespace is None  # empty means absent
    assert request.name == "web-0"


@pytest.mark.parametrize("version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
def test_encode_answers_in_the_version_asked(version: str) -> None:
    request = AdmissionRequest(version, "u-9", "", "Pod", "CREATE", "ns", None, {})
    patch = [{"op": "add", "path": "/spec/shareProcessNamespace", "value": True}]
    answer = json.loads(encode(request, allowed=True, patch=patch, warnings=("w",)))
    assert answer["apiVersion"] == version
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == "u-9"
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == patch
    assert response["warnings"] == ["w"]


def test_no_patch_fields_when_nothing_changes_and_denials_carry_a_status() -> None:
    request = AdmissionRequest("admission.k8s.io/v1", "u", "", "Pod", "CREATE", None, None, {})
    allowed = json.loads(encode(request, allowed=True))["response"]
    assert allowed == {"uid": "u", "allowed": True}
    denied = json.loads(encode(request, allowed=False, message="bad critical"))["response"]
    assert denied["allowed"] is False
    assert denied["status"]["message"] == "bad critical"
    assert "patch" not in denied
