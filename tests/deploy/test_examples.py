"""deploy/examples: the Go leak demo in an opted-in namespace, with valid overrides and
S3 credentials that never appear as literal keys."""

import json

import pytest

from oomdump.durations import parse_duration
from tests.deploy.conftest import one

ANNOTATIONS = {  # DESIGN.md "Per-pod annotation overrides"
    "oomdump.io/critical",
    "oomdump.io/cooldown",
    "oomdump.io/watch-time",
    "oomdump.io/ports",
    "oomdump.io/bucket",
    "oomdump.io/prefix",
}


@pytest.fixture(scope="module")
def demo(examples) -> dict:
    return one(examples, "Deployment", "go-memory-leak")


def test_namespace_is_opted_in(examples, demo) -> None:
    namespace = one(examples, "Namespace", "oomdump-demo")
    assert namespace["metadata"]["labels"]["oomdump.io/inject"] == "enabled"
    # the privileged watcher must be admitted by Pod Security
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert demo["metadata"]["namespace"] == "oomdump-demo"
    assert demo["spec"]["template"]["metadata"]["labels"].get("oomdump.io/inject") != "disabled"


def test_overrides_are_known_annotations_with_valid_values(demo) -> None:
    annotations = demo["spec"]["template"]["metadata"]["annotations"]
    overrides = {k: v for k, v in annotations.items() if k.startswith("oomdump.io/")}
    assert set(overrides) == ANNOTATIONS
    assert 1 <= int(overrides["oomdump.io/critical"]) <= 99
    assert parse_duration(overrides["oomdump.io/cooldown"]) > 0
    assert parse_duration(overrides["oomdump.io/watch-time"]) > 0
    assert all(0 < int(p) < 65536 for p in overrides["oomdump.io/ports"].split(","))


def test_the_leaking_app_serves_pprof_on_the_watched_port(demo) -> None:
    (app,) = demo["spec"]["template"]["spec"]["containers"]
    assert app["image"] == "ghcr.io/oomdump/go-memory-leak:0.1.0"
    port = demo["spec"]["template"]["metadata"]["annotations"]["oomdump.io/ports"]
    assert f"-port={port}" in app["args"]
    assert [p["containerPort"] for p in app["ports"]] == [int(port)]
    assert app["resources"]["limits"]["memory"] == "256Mi"  # the limit the watcher measures


def test_s3_credentials_come_from_irsa_never_literal_keys(examples, demo) -> None:
    spec = demo["spec"]["template"]["spec"]
    account = one(examples, "ServiceAccount", spec["serviceAccountName"])
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )
    text = json.dumps(examples)
    for secret_name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert secret_name not in text
    assert not any(o["kind"] == "Secret" for o in examples)
