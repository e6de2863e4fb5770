"""The real server: `python -m webhook` under uvicorn, over TLS verified against the test CA."""

import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.webhook.conftest import Pki
from tests.webhook.helpers import (
    JSON,
    metric,
    patched,
    review,
    shared_reviews,
    simple_pod,
    wait_for,
)
from tests.webhook.pki import issue
from tests.webhook.server import REPO, RunningWebhook, run_webhook


def test_health_endpoints(webhook: RunningWebhook) -> None:
    with webhook.client() as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert "oomdump_webhook_requests_total" in client.get("/metrics").text


def test_shared_reviews_are_injected_and_answered_in_their_version(
    webhook: RunningWebhook, shared_admission_reviews: Path
) -> None:
    versions = set()
    with webhook.client() as client:
        for path in shared_reviews(shared_admission_reviews):
            sent = json.loads(path.read_bytes())
            reply = client.post("/mutate", content=path.read_bytes(), headers=JSON)
            assert reply.status_code == 200, (path.name, reply.text)
            answer = reply.json()
            assert answer["apiVersion"] == sent["apiVersion"]
            assert answer["kind"] == "AdmissionReview"
            assert answer["response"]["uid"] == sent["request"]["uid"]
            assert answer["response"]["allowed"] is True
            pod = patched(sent["request"]["object"], answer["response"])
            assert pod["spec"]["containers"][-1]["name"] == "oomdump-sidecar"
            assert pod["spec"]["containers"][-1]["image"] == "ghcr.io/oomdump/oomdump:test"
            versions.add(answer["apiVersion"])
    assert versions == {"admission.k8s.io/v1", "admission.k8s.io/v1beta1"}


def test_second_pass_yields_no_patch(webhook: RunningWebhook) -> None:
    pod = simple_pod()
    with webhook.client() as client:
        first = client.post("/mutate", json=review(pod)).json()["response"]
        mutated = patched(pod, first)
        second = client.post("/mutate", json=review(mutated)).json()["response"]
    assert second["allowed"] is True
    assert "patch" not in second
    assert "already-injected" in second["warnings"][0]


def test_invalid_annotation_is_denied_with_a_message(webhook: RunningWebhook) -> None:
    pod = simple_pod({"oomdump.io/cooldown": "100ms"})
    with webhook.client() as client:
        reply = client.post("/mutate", json=review(pod))
    assert reply.status_code == 200
    response = reply.json()["response"]
    assert response["allowed"] is False
    assert "oomdump.io/cooldown='100ms'" in response["status"]["message"]
    assert "1s to 24h" in response["status"]["message"]
    assert "patch" not in response


BAD_REQUESTS = [
    (b"{broken", JSON, 400, "not valid JSON"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', JSON, 400, "request"),
    (json.dumps(review(simple_pod(), uid=None)).encode(), JSON, 400, "request.uid"),
    (json.dumps(review(None)).encode(), JSON, 400, "pod must be a JSON object"),
    (json.dumps(review({"metadata": {}})).encode(), JSON, 400, "spec"),
    (b"[" * 100_000 + b"]" * 100_000, JSON, 400, "not valid JSON"),
    (
        json.dumps(review(simple_pod())).encode(),
        {"content-type": "text/plain"},
        415,
        "Content-Type",
    ),
    (json.dumps(review(simple_pod())).encode(), {}, 415, "Content-Type"),
]


@pytest.mark.parametrize(("body", "headers", "status", "message"), BAD_REQUESTS)
def test_bad_requests_get_a_clear_4xx(
    webhook: RunningWebhook, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    with webhook.client() as client:
        reply = client.post("/mutate", content=body, headers=headers)
        assert reply.status_code == status, reply.text
        assert message in reply.json()["message"]
        assert client.get("/readyz").status_code == 200


def test_deep_but_valid_pods_are_injected(webhook: RunningWebhook) -> None:
    pod = simple_pod()
    deep: Any = "bottom"
    for _ in range(200):  # deeper than any real pod; the test's own deepcopy limits it
        deep = [deep]
    pod["spec"]["containers"][0]["x-extension"] = deep
    with webhook.client() as client:
        reply = client.post("/mutate", json=review(pod))
    assert reply.status_code == 200
    assert (
        patched(pod, reply.json()["response"])["spec"]["containers"][0]
        == pod["spec"]["containers"][0]
    )


def test_body_over_the_cap_is_413_with_or_without_content_length(webhook: RunningWebhook) -> None:
    big = b'{"pad": "' + b"x" * (6 * 1024 * 1024) + b'"}'

    def chunks() -> Any:
        for start in range(0, len(big), 1 << 20):
            yield big[start : start + (1 << 20)]

    with webhook.client() as client:
        declared = client.post("/mutate", content=big, headers=JSON)
        assert declared.status_code == 413
        assert "6 MiB" in declared.json()["message"]
    with webhook.client() as client:
        streamed = client.post("/mutate", content=chunks(), headers=JSON)
        assert streamed.status_code == 413
    with webhook.client() as client:
        assert client.get("/readyz").status_code == 200


def test_metrics_count_results_and_reasons(webhook: RunningWebhook) -> None:
    with webhook.client() as client:
        before = client.get("/metrics").text
        client.post("/mutate", json=review(simple_pod({"oomdump.io/inject": "disabled"})))
        client.post("/mutate", json=review(simple_pod(), namespace="kube-system"))
        client.post("/mutate", json=review(simple_pod({"oomdump.io/critical": "0"})))
        client.post("/mutate", json=review(simple_pod()))
        client.post("/mutate", content=b"nope", headers=JSON)
        after = client.get("/metrics").text

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("oomdump_webhook_skips_total", reason="opt-out") == 1
    assert grew("oomdump_webhook_skips_total", reason="excluded-namespace") == 1
    assert grew("oomdump_webhook_denials_total", reason="invalid-annotation") == 1
    assert grew("oomdump_webhook_injections_total", mode="container") == 1
    assert grew("oomdump_webhook_bad_requests_total", reason="malformed") == 1
    assert grew("oomdump_webhook_requests_total", result="skipped") == 2
    assert grew("oomdump_webhook_request_duration_seconds_count") == 4
    log = webhook.log_text()
    assert "result=skipped reason=opt-out" in log
    assert "result=denied reason=invalid-annotation" in log


def test_native_mode_and_defaults_file_reload(tmp_path: Path, module_pki: Pki) -> None:
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("env: {CRITICAL: '60'}\n")
    args = (
        "--sidecar-mode",
        "native",
        "--defaults-file",
        str(defaults),
        "--reload-interval",
        "0.2",
    )
    pki = module_pki
    with run_webhook(tmp_path, pki.cert_file, pki.key_file, pki.ca_file, *args) as webhook:

        def critical() -> str:
            with webhook.client() as client:
                response = client.post("/mutate", json=review(simple_pod())).json()["response"]
            sidecar = patched(simple_pod(), response)["spec"]["initContainers"][0]
            assert sidecar["restartPolicy"] == "Always"
            return {e["name"]: e.get("value") for e in sidecar["env"]}["CRITICAL"]

        assert critical() == "60"
        defaults.write_text("env: {CRITICAL: '150'}\n")  # invalid: the old defaults stay
        wait_for(lambda: "defaults file not reloaded" in webhook.log_text())
        assert critical() == "60"
        defaults.write_text("env: {CRITICAL: '85'}\n")
        wait_for(lambda: critical() == "85")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert-file", "/nonexistent/tls.crt"], "cannot read /nonexistent/tls.crt"),
        (["--defaults-file", "/nonexistent/defaults.yaml"], "cannot read the defaults file"),
        (["--sidecar-mode", "sidecar"], "invalid choice: 'sidecar'"),
        (["--sidecar-image", ""], "missing --sidecar-image"),
    ],
)
def test_startup_errors_exit_with_a_clear_message(
    module_pki: Pki, args: list[str], message: str
) -> None:
    command = [
        sys.executable, "-m", "webhook", "--port", "1",
        "--tls-cert-file", str(module_pki.cert_file), "--tls-key-file", str(module_pki.key_file),
        "--sidecar-image", "img", *args,
    ]  # fmt: skip
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert finished.returncode != 0
    assert message in finished.stderr


def test_mismatched_key_is_refused_at_startup(tmp_path: Path, module_pki: Pki) -> None:
    other_cert, other_key = tmp_path / "o.crt", tmp_path / "o.key"
    issue(module_pki.ca, other_cert, other_key)
    command = [
        sys.executable, "-m", "webhook", "--port", "1", "--sidecar-image", "img",
        "--tls-cert-file", str(module_pki.cert_file), "--tls-key-file", str(other_key),
    ]  # fmt: skip
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert finished.returncode != 0
    assert "not a matching PEM certificate and private key" in finished.stderr


def test_plain_http_is_not_served(webhook: RunningWebhook) -> None:
    # The port is open (no "connection refused"), but a plain HTTP request gets no HTTP
    # answer: the TLS layer drops it.
    with socket.create_connection(("127.0.0.1", webhook.port), timeout=5) as raw:
        raw.sendall(b"GET /readyz HTTP/1.1\r\nHost: webhook\r\n\r\n")
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := raw.recv(4096):
                answer += chunk
    assert not answer.startswith(b"HTTP/"), answer
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{webhook.port}/readyz", timeout=5)
