"""`python -m certs bootstrap` against a real API server: the real CLI, a real kubeconfig."""

import base64
import copy
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from testinfra.cluster import Cluster
from testinfra.pki import create_ca
from testinfra.process import start_process, stop_process, wait_until
from testinfra.webhook_server import REPO_ROOT, WEBHOOK_NAMESPACE, rendered_webhook_configuration

pytestmark = pytest.mark.e2e

SERVICE_NAME = "oomdump-webhook.oomdump-system.svc"


def _bootstrap_command(cluster: Cluster, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "certs",
        "bootstrap",
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--namespace",
        WEBHOOK_NAMESPACE,
        *extra,
    ]


def _bootstrap(cluster: Cluster, *extra: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        _bootstrap_command(cluster, *extra),
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert result.returncode == 0, f"bootstrap failed:\n{result.stdout}{result.stderr}"
    return result


@pytest.fixture
def webhook_configuration_name(
    cluster: Cluster,
    admissionregistration: client.AdmissionregistrationV1Api,
    deploy_objects: list[dict[str, Any]],
) -> str:
    """The rendered configuration under a fresh name, selecting no namespace, so that its
    changing caBundle cannot disturb the other tests."""
    try:
        cluster.create_namespace(WEBHOOK_NAMESPACE)
    except ApiException as error:
        if error.status != 409:
            raise
    # A copy: deploy_objects is shared by the session and must stay as rendered.
    configuration = copy.deepcopy(rendered_webhook_configuration(deploy_objects))
    name = f"oomdump-bootstrap-{uuid.uuid4().hex[:6]}"
    configuration["metadata"] = {"name": name}
    for hook in configuration["webhooks"]:
        hook["clientConfig"].pop("caBundle", None)
        hook["namespaceSelector"] = {"matchLabels": {"oomdump.io/e2e-selects": "nothing"}}
    admissionregistration.create_mutating_webhook_configuration(configuration)
    return name


def _secret(core: client.CoreV1Api, name: str) -> client.V1Secret:
    return core.read_namespaced_secret(name, WEBHOOK_NAMESPACE)


def _secret_file(secret: client.V1Secret, key: str) -> bytes:
    return base64.b64decode(secret.data[key])


def _ca_bundles(api: client.AdmissionregistrationV1Api, name: str) -> list[bytes]:
    configuration = api.read_mutating_webhook_configuration(name)
    return [base64.b64decode(hook.client_config.ca_bundle or "") for hook in configuration.webhooks]


def _overwrite_ca_bundle(api: client.AdmissionregistrationV1Api, name: str, pem: bytes) -> None:
    configuration = api.read_mutating_webhook_configuration(name)
    for hook in configuration.webhooks:
        hook.client_config.ca_bundle = base64.b64encode(pem).decode()
    api.replace_mutating_webhook_configuration(name, configuration)


def _bundles_trust(bundles: list[bytes], ca_pem: bytes) -> bool:
    ca = x509.load_pem_x509_certificate(ca_pem)
    return bool(bundles) and all(ca in x509.load_pem_x509_certificates(b) for b in bundles)


def test_bootstrap_creates_secret_patches_and_restores_ca_bundle(
    cluster: Cluster,
    core: client.CoreV1Api,
    admissionregistration: client.AdmissionregistrationV1Api,
    webhook_configuration_name: str,
    tmp_path: Path,
) -> None:
    secret_name = f"oomdump-tls-{uuid.uuid4().hex[:6]}"
    flags = ("--secret-name", secret_name, "--webhook-config-name", webhook_configuration_name)

    _bootstrap(cluster, *flags)

    secret = _secret(core, secret_name)
    ca_pem = _secret_file(secret, "ca.crt")
    leaf = x509.load_pem_x509_certificate(_secret_file(secret, "tls.crt"))
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert SERVICE_NAME in names.get_values_for_type(x509.DNSName)
    assert _bundles_trust(_ca_bundles(admissionregistration, webhook_configuration_name), ca_pem)

    # A second run changes nothing.
    _bootstrap(cluster, *flags)
    again = _secret(core, secret_name)
    assert again.metadata.resource_version == secret.metadata.resource_version

    # Something else (a GitOps tool) overwrites the caBundle; the reconcile loop restores it.
    loop_log = tmp_path / "bootstrap-loop.log"
    loop = start_process(
        [*_bootstrap_command(cluster, *flags), "--loop", "--interval", "500ms"],
        loop_log,
        cwd=REPO_ROOT,
    )
    try:
        foreign = create_ca(tmp_path / "foreign", "someone-else").cert_path.read_bytes()
        _overwrite_ca_bundle(admissionregistration, webhook_configuration_name, foreign)
        wait_until(
            lambda: _bundles_trust(
                _ca_bundles(admissionregistration, webhook_configuration_name), ca_pem
            ),
            what="bootstrap --loop restoring the caBundle",
            timeout=30,
            process=loop,
            log_path=loop_log,
        )
        loop.terminate()
        assert loop.wait(timeout=15) == 0, loop_log.read_text()
    finally:
        stop_process(loop)
    assert _secret(core, secret_name).metadata.resource_version == secret.metadata.resource_version


def test_bootstrap_loop_rotates_a_serving_certificate_when_a_third_of_it_is_left(
    cluster: Cluster,
    core: client.CoreV1Api,
    admissionregistration: client.AdmissionregistrationV1Api,
    webhook_configuration_name: str,
    tmp_path: Path,
) -> None:
    secret_name = f"oomdump-tls-{uuid.uuid4().hex[:6]}"
    validity = timedelta(seconds=15)
    flags = (
        "--secret-name",
        secret_name,
        "--webhook-config-name",
        webhook_configuration_name,
        "--validity",
        f"{validity.seconds}s",
    )
    _bootstrap(cluster, *flags)
    first = _secret(core, secret_name)
    old = x509.load_pem_x509_certificate(_secret_file(first, "tls.crt"))
    lifetime = old.not_valid_after_utc - old.not_valid_before_utc
    renew_at = old.not_valid_after_utc - lifetime / 3

    loop_log = tmp_path / "bootstrap-loop.log"
    loop = start_process(
        [*_bootstrap_command(cluster, *flags), "--loop", "--interval", "500ms"],
        loop_log,
        cwd=REPO_ROOT,
    )
    try:
        until_expiry = (old.not_valid_after_utc - datetime.now(UTC)).total_seconds()
        wait_until(
            lambda: (
                _secret_file(_secret(core, secret_name), "tls.crt")
                != _secret_file(first, "tls.crt")
            ),
            what="bootstrap --loop renewing the serving certificate",
            timeout=max(until_expiry, 0) + 5,
            process=loop,
            log_path=loop_log,
        )
    finally:
        stop_process(loop)

    second = _secret(core, secret_name)
    new = x509.load_pem_x509_certificate(_secret_file(second, "tls.crt"))
    issued_at = new.not_valid_after_utc - validity
    # Renewed once under a third was left (second granularity), and before the old expired.
    assert issued_at >= renew_at - timedelta(seconds=1)
    assert issued_at < old.not_valid_after_utc
    assert _secret_file(second, "tls.key") != _secret_file(first, "tls.key")
    ca_pem = _secret_file(first, "ca.crt")
    assert _secret_file(second, "ca.crt") == ca_pem
    new.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    assert _bundles_trust(_ca_bundles(admissionregistration, webhook_configuration_name), ca_pem)
