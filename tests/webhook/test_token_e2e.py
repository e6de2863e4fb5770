"""The watcher gets no API token, through a real kube-apiserver with its ServiceAccount
admission plugin on (marker e2e).

The plugin mounts the pod's token into every container without a mount at
/var/run/secrets/kubernetes.io/serviceaccount. It runs before webhooks, and again after
them whenever a webhook changed the pod (reinvocation runs every in-tree plugin again),
so a watcher container added without that mount would get the token on the second pass.
The watcher's one credential, a projected token for the audience `oomdump` at another
path (for notices to the webhook), must not make the plugin mount the API token either.
"""

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from testinfra.cluster import Cluster, running_cluster
from tests.webhook.conftest import Pki
from tests.webhook.server import RunningWebhook, run_webhook
from webhook.inject import CONTAINER_NAME, NOTIFY_MOUNT_PATH, TOKEN_MOUNT_PATH

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
LIVE_TIMEOUT_S = 30.0  # the API server loads a new webhook configuration asynchronously


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as running:
        yield running


@pytest.fixture(scope="module")
def registered(cluster: Cluster, webhook: RunningWebhook) -> Iterator[RunningWebhook]:
    """The shipped MutatingWebhookConfiguration, pointed at the test webhook."""
    text = (REPO / "deploy" / "base" / "mutatingwebhookconfiguration.yaml").read_text()
    configuration: dict[str, Any] = yaml.safe_load(text)
    configuration["metadata"]["name"] = f"oomdump-token-{uuid.uuid4().hex[:6]}"
    (hook,) = configuration["webhooks"]
    hook["clientConfig"] = {
        "url": f"{webhook.url}/mutate",
        "caBundle": base64.b64encode(webhook.ca_file.read_bytes()).decode(),
    }
    api = client.AdmissionregistrationV1Api(cluster.api_client())
    api.create_mutating_webhook_configuration(configuration)
    try:
        yield webhook
    finally:
        api.delete_mutating_webhook_configuration(configuration["metadata"]["name"])


def app_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app"},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
    }


def admitted(cluster: Cluster, namespace: str) -> client.V1Pod:
    """The pod as the API server would store it (dry run), once the webhook injects."""
    core = client.CoreV1Api(cluster.api_client())
    deadline = time.monotonic() + LIVE_TIMEOUT_S
    while True:
        pod = core.create_namespaced_pod(namespace, app_pod(), dry_run="All")
        if any(c.name == CONTAINER_NAME for c in pod.spec.containers):
            return pod
        assert time.monotonic() < deadline, "the API server never called the webhook"
        time.sleep(0.2)  # poll interval of a bounded wait


def test_the_watcher_holds_no_token_the_app_keeps_its_own(
    cluster: Cluster, registered: RunningWebhook
) -> None:
    namespace = f"token-{uuid.uuid4().hex[:6]}"
    cluster.create_namespace(namespace, {"oomdump.io/inject": "enabled"})
    pod = admitted(cluster, namespace)
    volumes = {v.name: v for v in pod.spec.volumes}
    by_name = {c.name: c for c in pod.spec.containers}
    app_mounts = {m.mount_path: m.name for m in by_name["app"].volume_mounts}
    token_volume = volumes[app_mounts[TOKEN_MOUNT_PATH]]
    assert token_volume.projected is not None  # the plugin ran: the app has its token
    watcher_mounts = by_name[CONTAINER_NAME].volume_mounts
    at_token_path = [m for m in watcher_mounts if m.mount_path == TOKEN_MOUNT_PATH]
    assert len(at_token_path) == 1 and at_token_path[0].read_only
    shadow = volumes[at_token_path[0].name]
    assert shadow.empty_dir is not None and shadow.projected is None
    projected = [m for m in watcher_mounts if volumes[m.name].projected is not None]
    # The notice token alone: for the audience oomdump, which the API server refuses.
    assert [(m.mount_path, m.read_only) for m in projected] == [(NOTIFY_MOUNT_PATH, True)]
    (source,) = volumes[projected[0].name].projected.sources
    assert source.service_account_token.audience == "oomdump"
    assert source.config_map is None and source.secret is None
    env = {e.name: e.value for e in by_name[CONTAINER_NAME].env}
    assert env["NOTIFY_TOKEN_FILE"] == f"{NOTIFY_MOUNT_PATH}/token"
    assert env["NOTIFY_CA"] == registered.ca_file.read_text()


@pytest.fixture(scope="module")
def webhook(
    tmp_path_factory: pytest.TempPathFactory, module_pki: Pki, cluster: Cluster
) -> Iterator[RunningWebhook]:
    """With API credentials (notices on) and ca.crt beside tls.crt: watchers get the notice
    token and settings."""
    assert module_pki.ca_file == module_pki.cert_file.parent / "ca.crt"
    workdir = tmp_path_factory.mktemp("webhook-token")
    with run_webhook(
        workdir, module_pki.cert_file, module_pki.key_file, module_pki.ca_file,
        "--kubeconfig", str(cluster.kubeconfig),
    ) as w:  # fmt: skip
        yield w
