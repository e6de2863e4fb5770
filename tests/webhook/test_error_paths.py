"""The webhook's error paths on the real server (`python -m webhook` under uvicorn, TLS):
the defaults file deleted or broken while serving, the file-watch loop surviving an
unexpected error, SIGTERM with requests in flight, the certificate-expiry metric and the
refusal of TLS below 1.2."""

import shutil
import socket
import ssl
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from certs.pki import issue_ca, issue_serving_pair
from tests.webhook.conftest import Pki, make_pki
from tests.webhook.helpers import metric, patched, review, simple_pod, wait_for
from tests.webhook.pki import issue
from tests.webhook.server import RunningWebhook, run_webhook
from tests.webhook.test_cert_reload import replace_pair
from webhook.tls import ServingCertificate


def metrics_of(webhook: RunningWebhook) -> str:
    with webhook.client() as client:
        return client.get("/metrics").text


def critical_served(webhook: RunningWebhook) -> str:
    with webhook.client() as client:
        response = client.post("/mutate", json=review(simple_pod())).json()["response"]
    sidecar = patched(simple_pod(), response)["spec"]["containers"][-1]
    return {e["name"]: e.get("value") for e in sidecar["env"]}["CRITICAL"]


def refused(webhook: RunningWebhook) -> float:
    return metric(
        metrics_of(webhook), "oomdump_webhook_reloads_total", file="defaults", result="refused"
    )


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(lambda path: path.unlink(), id="deleted"),
        pytest.param(lambda path: path.write_text("env: [unclosed"), id="invalid-yaml"),
        pytest.param(lambda path: path.write_text("env: {CRITICAL: '150'}"), id="invalid-value"),
        pytest.param(lambda path: path.write_bytes(b"env: {CRITICAL: '\xff'}"), id="not-utf8"),
    ],
)
def test_a_broken_defaults_file_keeps_the_last_good_one(
    tmp_path: Path, module_pki: Pki, break_it
) -> None:
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("env: {CRITICAL: '60'}\n")
    args = ("--defaults-file", str(defaults), "--reload-interval", "0.1")
    pki = module_pki
    with run_webhook(tmp_path, pki.cert_file, pki.key_file, pki.ca_file, *args) as webhook:
        assert critical_served(webhook) == "60"
        assert metric(metrics_of(webhook), "oomdump_webhook_defaults_stale") == 0
        break_it(defaults)
        wait_for(lambda: refused(webhook) == 1)
        assert "defaults file not reloaded, keeping the previous defaults" in webhook.log_text()
        text = metrics_of(webhook)
        assert metric(text, "oomdump_webhook_defaults_stale") == 1
        assert metric(text, "oomdump_webhook_file_check_errors_total") == 0  # refused, not a crash
        assert critical_served(webhook) == "60"
        with webhook.client() as client:
            assert client.get("/readyz").status_code == 200  # on purpose: see ServerState
        time.sleep(0.5)  # five more check intervals: the refusal is counted once, not per check
        assert refused(webhook) == 1
        defaults.write_text("env: {CRITICAL: '85'}\n")
        wait_for(lambda: critical_served(webhook) == "85")
        assert metric(metrics_of(webhook), "oomdump_webhook_defaults_stale") == 0


def test_the_file_watch_loop_survives_an_unexpected_error(tmp_path: Path) -> None:
    """A certificate reload needs the temporary directory (webhook/tls.py); removing it makes
    the check raise an error no branch expects. The loop logs and counts it, and the next
    rotation is still picked up."""
    pki = make_pki(tmp_path / "pki")
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    with run_webhook(
        tmp_path, pki.cert_file, pki.key_file, pki.ca_file, "--reload-interval", "0.1",
        env={"TMPDIR": str(scratch)},
    ) as webhook:  # fmt: skip
        scratch.rmdir()
        first = issue_pair(pki, tmp_path)
        wait_for(
            lambda: metric(metrics_of(webhook), "oomdump_webhook_file_check_errors_total") >= 1
        )
        assert "checking the certificate and defaults files failed" in webhook.log_text()
        assert served_serial(webhook) == pki.serial  # the old pair still serves
        scratch.mkdir()
        second = issue_pair(pki, tmp_path)
        assert second != first
        wait_for(lambda: served_serial(webhook) == second)
        assert webhook.process.poll() is None


def issue_pair(pki: Pki, folder: Path) -> int:
    return replace_pair(pki.cert_file, pki.key_file, lambda c, k: issue(pki.ca, c, k))


def served_certificate(webhook: RunningWebhook, verify: bool = True) -> x509.Certificate:
    if verify:
        context = ssl.create_default_context(cafile=str(webhook.ca_file))
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", webhook.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def served_serial(webhook: RunningWebhook) -> int:
    return served_certificate(webhook).serial_number


def test_the_expiry_metric_follows_the_served_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with run_webhook(
        tmp_path, pki.cert_file, pki.key_file, pki.ca_file, "--reload-interval", "0.1"
    ) as webhook:
        served = served_certificate(webhook).not_valid_after_utc.timestamp()
        gauge = "oomdump_webhook_certificate_not_after_seconds"
        assert metric(metrics_of(webhook), gauge) == served
        # A pair that expires in three days (another CA: the metric is about the file).
        now = datetime.now(UTC)
        ca = issue_ca("short-lived test CA", timedelta(days=30), now)
        pair = issue_serving_pair(ca, ["localhost"], timedelta(days=3), now)
        staged_key = tmp_path / "staged.key"
        staged_key.write_bytes(pair.key_pem)
        pki.cert_file.write_bytes(pair.cert_pem)
        shutil.move(staged_key, pki.key_file)
        expected = x509.load_pem_x509_certificate(pair.cert_pem).not_valid_after_utc.timestamp()
        wait_for(lambda: metric(metrics_of_unverified(webhook), gauge) == expected)
        assert served_certificate(webhook, verify=False).not_valid_after_utc.timestamp() == expected
        assert expected - time.time() < 3 * 86400 + 60


def metrics_of_unverified(webhook: RunningWebhook) -> str:
    return httpx.get(webhook.url + "/metrics", verify=False, timeout=10).text


def old_tls_client(maximum: ssl.TLSVersion) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 offers TLS < 1.2 only at level 0
    return context


def in_memory_handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> dict[str, str]:
    """Each end's outcome: its TLS version once done, or the reason OpenSSL gave it."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    ends = {
        "client": client.wrap_bio(c_in, c_out),
        "server": server.wrap_bio(s_in, s_out, server_side=True),
    }
    outcome: dict[str, str] = {}
    for _ in range(8):  # flights until both ends are done; extra rounds are no-ops
        for name, end in ends.items():
            if name in outcome:
                continue
            try:
                end.do_handshake()
                outcome[name] = str(end.version())
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as error:
                outcome[name] = str(error.reason)
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    return outcome


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_below_1_2_is_refused_for_its_version(
    webhook: RunningWebhook, module_pki: Pki, version: ssl.TLSVersion
) -> None:
    client = old_tls_client(version)
    # The control: this client really speaks the old version to a server that allows it.
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive.load_cert_chain(module_pki.cert_file, module_pki.key_file)
    spoken = {ssl.TLSVersion.TLSv1: "TLSv1", ssl.TLSVersion.TLSv1_1: "TLSv1.1"}[version]
    assert in_memory_handshake(client, permissive) == {"client": spoken, "server": spoken}
    # The webhook's own context refuses it and answers with the protocol_version alert.
    served = ServingCertificate(module_pki.cert_file, module_pki.key_file).context
    assert in_memory_handshake(client, served) == {
        "server": "UNSUPPORTED_PROTOCOL",
        "client": "TLSV1_ALERT_PROTOCOL_VERSION",
    }
    # The running server: up, TLS 1.2 completes on its port...
    with (
        socket.create_connection(("127.0.0.1", webhook.port), timeout=5) as raw,
        old_tls_client(ssl.TLSVersion.TLSv1_2).wrap_socket(raw) as tls,
    ):
        assert tls.version() == "TLSv1.2"
    # ...and the same connection with the old version is accepted, then dropped in the
    # handshake. asyncio's SSL transport (uvicorn's) closes without flushing the alert
    # OpenSSL wrote, so the client sees EOF there rather than the alert itself.
    with (
        socket.create_connection(("127.0.0.1", webhook.port), timeout=5) as raw,
        pytest.raises(ssl.SSLError) as dropped,
    ):
        client.wrap_socket(raw)
    assert dropped.value.reason in ("TLSV1_ALERT_PROTOCOL_VERSION", "UNEXPECTED_EOF_WHILE_READING")
