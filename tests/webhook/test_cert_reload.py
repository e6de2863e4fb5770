"""Certificate rotation on a running server: real uvicorn, real TLS, files replaced on disk."""

import os
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
from cryptography import x509

from tests.webhook.conftest import make_pki
from tests.webhook.helpers import JSON, metric, review, simple_pod, wait_for
from tests.webhook.pki import issue
from tests.webhook.server import RunningWebhook, run_webhook


def served_serial(webhook: RunningWebhook) -> int:
    """Serial of the certificate a fresh handshake presents (verified against the CA)."""
    context = ssl.create_default_context(cafile=str(webhook.ca_file))
    with (
        socket.create_connection(("127.0.0.1", webhook.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


class RequestStream:
    """Background /mutate traffic: one keep-alive connection and one new connection per call."""

    def __init__(self, webhook: RunningWebhook) -> None:
        self.webhook = webhook
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(True,), daemon=True),
            threading.Thread(target=self._run, args=(False,), daemon=True),
        ]
        self._lock = threading.Lock()

    def __enter__(self) -> "RequestStream":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, keep_alive: bool) -> None:
        body = review(simple_pod())
        shared = self.webhook.client() if keep_alive else None
        try:
            while not self._stop.is_set():
                client = shared or self.webhook.client()
                try:
                    reply = client.post("/mutate", json=body, headers=JSON)
                    good = reply.status_code == 200 and "patch" in reply.json()["response"]
                    outcome = "" if good else f"{reply.status_code}: {reply.text[:200]}"
                except httpx.HTTPError as error:
                    outcome = f"{type(error).__name__}: {error}"
                finally:
                    if shared is None:
                        client.close()
                with self._lock:
                    if outcome:
                        self.failures.append(outcome)
                    else:
                        self.ok += 1
        finally:
            if shared is not None:
                shared.close()

    def reached(self, count: int) -> Callable[[], bool]:
        return lambda: self.ok >= count


def replace_pair(cert_file: Path, key_file: Path, issue_into: Callable[[Path, Path], int]) -> int:
    """Replace cert then key, each by an atomic rename (so a reader may see a mismatched pair)."""
    staged_cert, staged_key = cert_file.with_suffix(".new-crt"), key_file.with_suffix(".new-key")
    serial = issue_into(staged_cert, staged_key)
    os.replace(staged_cert, cert_file)
    os.replace(staged_key, key_file)
    return serial


def test_rotated_certificate_is_served_without_dropping_requests(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with run_webhook(
        tmp_path, pki.cert_file, pki.key_file, pki.ca_file, "--reload-interval", "0.1"
    ) as webhook:
        assert served_serial(webhook) == pki.serial
        with RequestStream(webhook) as stream:
            wait_for(stream.reached(20))
            new_serial = replace_pair(
                pki.cert_file, pki.key_file, lambda c, k: issue(pki.ca, c, k, "webhook-rotated")
            )
            assert new_serial != pki.serial
            wait_for(lambda: served_serial(webhook) == new_serial)
            after_rotation = stream.ok
            wait_for(stream.reached(after_rotation + 20))
        assert stream.failures == []
        assert webhook.process.poll() is None
        with webhook.client() as client:
            metrics = client.get("/metrics").text
        assert (
            metric(metrics, "oomdump_webhook_reloads_total", file="certificate", result="ok") >= 1
        )


def test_a_broken_certificate_file_keeps_the_old_one_serving(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with run_webhook(
        tmp_path, pki.cert_file, pki.key_file, pki.ca_file, "--reload-interval", "0.1"
    ) as webhook:
        pki.cert_file.write_text("-----BEGIN CERTIFICATE-----\ntruncated")
        wait_for(lambda: "serving certificate not reloaded" in webhook.log_text())
        assert served_serial(webhook) == pki.serial
        with webhook.client() as client:
            assert client.post("/mutate", json=review(simple_pod())).status_code == 200
            metrics = client.get("/metrics").text
        assert (
            metric(metrics, "oomdump_webhook_reloads_total", file="certificate", result="refused")
            >= 1
        )
        # A good pair written afterwards is picked up: the refusal did not stop the watch.
        new_serial = issue(pki.ca, pki.cert_file, pki.key_file)
        wait_for(lambda: served_serial(webhook) == new_serial)
