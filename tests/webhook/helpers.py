"""Helpers shared by the webhook tests: requests, patches, metrics, waiting."""

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate

K8S_VERSION = "1.31.0"  # pinned schema; native sidecars (init restartPolicy) are GA here


def validate_pod(pod: dict[str, Any]) -> None:
    # Some captured objects omit apiVersion/kind (the request's kind says what they are).
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", **pod}, K8S_VERSION)


def shared_reviews(folder: Path) -> list[Path]:
    return sorted([*folder.glob("*.json"), *folder.glob("extra-v1beta1/*.json")])


def apply_answer(body: bytes, original: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    answer = json.loads(body)
    response = answer["response"]
    if "patch" not in response:
        return answer, original
    patch = json.loads(base64.b64decode(response["patch"]))
    return answer, jsonpatch.apply_patch(original, patch)


JSON = {"content-type": "application/json"}


def review(pod: dict[str, Any], **request: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "3b1f6d7e-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "shop",
            "object": pod,
            **request,
        },
    }


def simple_pod(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"generateName": "web-"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}


def patched(original: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["patchType"] == "JSONPatch"
    return jsonpatch.apply_patch(original, json.loads(base64.b64decode(response["patch"])))


def metric(text: str, name: str, **labels: str) -> float:
    selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
    prefix = f"{name}{{{selector}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def wait_for(condition: Callable[[], bool], deadline_s: float = 15.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {deadline_s}s")
