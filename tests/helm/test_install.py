"""`helm install`, `upgrade` and `uninstall` of the chart against a real kube-apiserver.

No kubelet runs (testinfra/cluster.py): the Deployment is stored, never run, so helm does
not wait for pods (`--wait` is off) and the certificate bootstrap runs here as the pods
would run it: `python -m certs bootstrap` with the Deployment's own arguments and a token
the API server issued for the chart's ServiceAccount, so the chart's RBAC decides.
"""

import base64
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from testinfra.cluster import Cluster, running_cluster
from testinfra.helm import HelmError
from testinfra.webhook_server import REPO_ROOT
from tests.e2e.deployed import (
    INIT_CONTAINER,
    container_command,
    rule_grants,
    service_account_of,
    wait_for_authorization,
    write_token_kubeconfig,
)
from tests.e2e.pods import has_sidecar, plain_pod
from tests.helm.runner import Helm

pytestmark = pytest.mark.e2e

NAMESPACE = "oomdump-system"
RELEASE = "oomdump"
CLUSTER_SCOPED = (
    ("ClusterRole", "oomdump-webhook-cabundle"),
    ("ClusterRole", "oomdump-webhook-notices"),
    ("ClusterRoleBinding", "oomdump-webhook-cabundle"),
    ("ClusterRoleBinding", "oomdump-webhook-notices"),
    ("MutatingWebhookConfiguration", "oomdump"),
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as running:
        yield running


@pytest.fixture
def helm(helm_built, cluster: Cluster, tmp_path: Path) -> Iterator[Helm]:
    runner = Helm(cluster, tmp_path / "helm", RELEASE, NAMESPACE)
    try:
        yield runner
    finally:  # nothing of a failed test is left for the next one
        try:
            runner("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=60s")
        except HelmError as error:
            if "not found" not in str(error):
                raise


def bootstrap(cluster: Cluster, objects: list[dict[str, Any]], out: Path) -> None:
    """The init container's command, as the chart's ServiceAccount."""
    api = cluster.api_client()
    identity = service_account_of(objects)
    for role in (o for o in objects if o["kind"] in ("ClusterRole", "Role")):
        for grant in rule_grants(role, role["metadata"].get("namespace")):
            wait_for_authorization(api, identity, grant, allowed=True)
    kubeconfig = write_token_kubeconfig(cluster, identity, out.parent / "sa-kubeconfig")
    command = container_command(objects, INIT_CONTAINER, out, kubeconfig)
    env = {**{k: v for k, v in os.environ.items() if k != "KUBECONFIG"}, "POD_NAMESPACE": NAMESPACE}
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, cwd=REPO_ROOT, env=env, timeout=60
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}{result.stderr}"


def secret_data(cluster: Cluster) -> dict[str, bytes]:
    secret = client.CoreV1Api(cluster.api_client()).read_namespaced_secret(
        "oomdump-webhook-tls", NAMESPACE
    )
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


def webhook_configuration(cluster: Cluster) -> client.V1MutatingWebhookConfiguration:
    api = client.AdmissionregistrationV1Api(cluster.api_client())
    return api.read_mutating_webhook_configuration("oomdump")


def defaults(cluster: Cluster) -> dict[str, Any]:
    config_map = client.CoreV1Api(cluster.api_client()).read_namespaced_config_map(
        "oomdump-sidecar-defaults", NAMESPACE
    )
    return yaml.safe_load(config_map.data["defaults.yaml"])


def exists(cluster: Cluster, kind: str, name: str) -> bool:
    api = cluster.api_client()
    rbac = client.RbacAuthorizationV1Api(api)
    read = {
        "ClusterRole": rbac.read_cluster_role,
        "ClusterRoleBinding": rbac.read_cluster_role_binding,
        "MutatingWebhookConfiguration": client.AdmissionregistrationV1Api(
            api
        ).read_mutating_webhook_configuration,
        "Secret": lambda n: client.CoreV1Api(api).read_namespaced_secret(n, NAMESPACE),
    }[kind]
    try:
        read(name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def left_in_namespace(cluster: Cluster) -> list[str]:
    """Objects of ours still in the release namespace (kube-root-ca.crt is not ours)."""
    core = client.CoreV1Api(cluster.api_client())
    apps = client.AppsV1Api(cluster.api_client())
    found = [f"Secret/{s.metadata.name}" for s in core.list_namespaced_secret(NAMESPACE).items]
    found += [
        f"ConfigMap/{c.metadata.name}"
        for c in core.list_namespaced_config_map(NAMESPACE).items
        if c.metadata.name != "kube-root-ca.crt"
    ]
    found += [f"Service/{s.metadata.name}" for s in core.list_namespaced_service(NAMESPACE).items]
    found += [
        f"ServiceAccount/{s.metadata.name}"
        for s in core.list_namespaced_service_account(NAMESPACE).items
    ]
    deployments = apps.list_namespaced_deployment(NAMESPACE).items
    found += [f"Deployment/{d.metadata.name}" for d in deployments]
    return found


def admitted(cluster: Cluster, namespace: str) -> client.V1Pod:
    """A pod created in `namespace` (dry run: stored nowhere, admitted or refused)."""
    core = client.CoreV1Api(cluster.api_client())
    pod = plain_pod(f"p-{uuid.uuid4().hex[:6]}")
    return core.create_namespaced_pod(namespace, pod, dry_run="All")


def test_install_upgrade_uninstall(helm: Helm, cluster: Cluster, tmp_path: Path) -> None:
    opted_in = f"helm-{uuid.uuid4().hex[:6]}"
    cluster.create_namespace(opted_in, {"oomdump.io/inject": "enabled"})

    helm.install()
    objects = helm.manifest()
    assert defaults(cluster)["env"]["CRITICAL"] == "70"
    # The Service has no backend here: with failurePolicy Ignore pods are still admitted.
    assert not has_sidecar(admitted(cluster, opted_in))

    bootstrap(cluster, objects, tmp_path / "certs")
    material = secret_data(cluster)
    assert material["ca.crt"].startswith(b"-----BEGIN CERTIFICATE-----")
    (hook,) = webhook_configuration(cluster).webhooks
    assert base64.b64decode(hook.client_config.ca_bundle) == material["ca.crt"]
    assert hook.timeout_seconds == 5

    helm.upgrade("critical=55", "webhook.timeoutSeconds=3")
    assert defaults(cluster)["env"]["CRITICAL"] == "55"
    (hook,) = webhook_configuration(cluster).webhooks
    assert hook.timeout_seconds == 3
    # Neither the CA and serving pair nor the caBundle the bootstrap wrote are touched.
    assert secret_data(cluster) == material
    assert base64.b64decode(hook.client_config.ca_bundle) == material["ca.crt"]

    helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=60s")
    assert [(k, n) for k, n in CLUSTER_SCOPED if exists(cluster, k, n)] == []
    assert left_in_namespace(cluster) == []  # the bootstrap's Secret included
    assert not has_sidecar(admitted(cluster, opted_in))


def test_a_refused_value_reaches_nothing(helm: Helm, cluster: Cluster) -> None:
    with pytest.raises(HelmError, match="at '/critical': got string, want integer"):
        helm.install("critical=abc")
    assert helm("list", "-A", "-q").strip() == ""
    assert not exists(cluster, "MutatingWebhookConfiguration", "oomdump")


def test_without_owning_it_the_bootstrap_secret_outlives_the_release(
    helm: Helm, cluster: Cluster, tmp_path: Path
) -> None:
    """What certificates.bootstrap.ownSecret (on by default) is for."""
    helm.install("certificates.bootstrap.ownSecret=false")
    assert not exists(cluster, "Secret", "oomdump-webhook-tls")
    bootstrap(cluster, helm.manifest(), tmp_path / "certs")
    helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=60s")
    try:
        assert left_in_namespace(cluster) == ["Secret/oomdump-webhook-tls"]
    finally:
        client.CoreV1Api(cluster.api_client()).delete_namespaced_secret(
            "oomdump-webhook-tls", NAMESPACE
        )
