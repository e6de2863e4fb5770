"""The Helm path on the real node (README "With Helm"), as an operator runs it.

`helm install --wait` with the image built here: the webhook's pods become Ready (their
init container made the Secret and the caBundle), and a pod created in a labelled
namespace runs with the watcher. `helm upgrade` with a changed CRITICAL and changed
webhook resources rolls the webhook pods while pods are created all along: every one of
them comes back injected (with failurePolicy Ignore, a failed webhook call would let a pod
through without the watcher: none does), the next pod has the new value, and the CA in
the Secret and in the caBundle is the one the install made. `helm uninstall`: no webhook
configuration is left pointing at the gone Service, and a pod created afterwards is
admitted and runs.

The chart and deploy/ own the same cluster-scoped names, so this module runs before the
ones that install deploy/ (file order) and removes its namespace at the end; it refuses
to start when another install is present.
"""

import base64
import threading
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from testinfra.cluster import Cluster
from testinfra.helm import HelmError
from testinfra.image import LEAK_IMAGE, OOMDUMP_IMAGE
from testinfra.node import Node
from testinfra.node_deploy import WEBHOOK_NAMESPACE, poll, wait_until_injecting
from tests.e2e.pods import env_of, has_sidecar, sidecar
from tests.helm.runner import Helm
from tests.node.story import (
    app_running,
    container_status,
    pod_summary,
    wait_for_webhook_rollout,
)

pytestmark = pytest.mark.node

RELEASE = "oomdump"
OPTED_IN = "helm-opted-in"
REPOSITORY, TAG = OOMDUMP_IMAGE.rsplit(":", 1)
IMAGE_VALUES = (f"image.repository={REPOSITORY}", f"image.tag={TAG}")
SMALL = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}


def _pod(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "app",
                    "image": LEAK_IMAGE,
                    "args": ["-port=8080", "-mode=gradual", "-start=1048576",
                             "-step=1048576", "-interval=1h"],
                    "resources": SMALL,
                }
            ],
        },
    }  # fmt: skip


def _webhook_pods(core: client.CoreV1Api) -> set[str]:
    """The webhook's pods that are not terminating."""
    pods = core.list_namespaced_pod(
        WEBHOOK_NAMESPACE, label_selector="app.kubernetes.io/name=oomdump-webhook"
    ).items
    return {p.metadata.uid for p in pods if p.metadata.deletion_timestamp is None}


def _ca(
    core: client.CoreV1Api, admission: client.AdmissionregistrationV1Api
) -> tuple[bytes, bytes] | None:
    """The CA in the bootstrap's Secret and in the caBundle; None until both are there."""
    secret = core.read_namespaced_secret("oomdump-webhook-tls", WEBHOOK_NAMESPACE)
    (hook,) = admission.read_mutating_webhook_configuration("oomdump").webhooks
    if "ca.crt" not in (secret.data or {}) or not hook.client_config.ca_bundle:
        return None
    return base64.b64decode(secret.data["ca.crt"]), base64.b64decode(hook.client_config.ca_bundle)


@pytest.fixture(scope="module")
def helm(cluster: Cluster, node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    core = client.CoreV1Api(cluster.api_client())
    admission = client.AdmissionregistrationV1Api(cluster.api_client())
    present = [c.metadata.name for c in admission.list_mutating_webhook_configuration().items]
    assert "oomdump" not in present, "oomdump is installed already: run this module first"
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=OPTED_IN,
                labels={
                    "oomdump.io/inject": "enabled",
                    "pod-security.kubernetes.io/enforce": "privileged",
                },
            )
        )
    )
    runner = Helm(cluster, tmp_path_factory.mktemp("helm"), RELEASE, WEBHOOK_NAMESPACE, "240s")
    yield runner
    try:
        runner("uninstall", RELEASE, "-n", WEBHOOK_NAMESPACE, "--wait", "--timeout=120s")
    except HelmError as error:  # already uninstalled by the test
        if "not found" not in str(error):
            raise
    for namespace in (OPTED_IN, WEBHOOK_NAMESPACE):
        try:
            core.delete_namespace(namespace)
        except ApiException as error:
            if error.status != 404:
                raise

    def gone() -> bool | None:
        names = {n.metadata.name for n in core.list_namespace().items}
        return True if not {OPTED_IN, WEBHOOK_NAMESPACE} & names else None

    poll("the test namespaces deleted", 180, gone, every=1.0)


class AdmissionLoad:
    """Dry-run pods created back to back in the opted-in namespace until stopped; what
    came back for each (injected, admitted without the watcher, or refused)."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core
        self.injected = 0
        self.without_watcher: list[str] = []
        self.refused: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "AdmissionLoad":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            name = f"load-{uuid.uuid4().hex[:8]}"
            try:
                pod = self.core.create_namespaced_pod(OPTED_IN, _pod(name), dry_run="All")
            except ApiException as error:
                self.refused.append(f"{error.status} {error.reason}")
                continue
            if has_sidecar(pod):
                self.injected += 1
            else:
                self.without_watcher.append(name)


def test_helm_install_upgrade_while_admitting_and_uninstall_on_a_real_node(
    helm: Helm, cluster: Cluster
) -> None:
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    admission = client.AdmissionregistrationV1Api(api)

    helm.install(*IMAGE_VALUES)
    apps = client.AppsV1Api(api)
    wait_for_webhook_rollout(apps, core)
    assert len(_webhook_pods(core)) == 2
    ca_after_install = poll("the bootstrap's CA", 60, lambda: _ca(core, admission))
    assert ca_after_install[0] == ca_after_install[1]
    wait_until_injecting(core, OPTED_IN)
    core.create_namespaced_pod(OPTED_IN, _pod("first"))
    pod = app_running(core, OPTED_IN, "first")
    assert env_of(sidecar(pod))["CRITICAL"] == "70"
    watcher = container_status(pod, "oomdump-sidecar")
    assert watcher is not None and watcher.state.running is not None, pod_summary(pod)
    assert sidecar(pod).image == OOMDUMP_IMAGE

    rolled_from = _webhook_pods(core)
    with AdmissionLoad(core) as load:
        # The resources change the webhook's pod template, so its pods roll.
        helm.upgrade(*IMAGE_VALUES, "critical=55", "webhook.resources.requests.memory=100Mi")
        wait_for_webhook_rollout(apps, core)
        poll(
            "the rolled webhook's defaults in use",
            60,
            lambda: (
                True
                if env_of(sidecar(wait_until_injecting(core, OPTED_IN))).get("CRITICAL") == "55"
                else None
            ),
        )
    assert not _webhook_pods(core) & rolled_from, "the upgrade did not roll the webhook pods"
    assert load.refused == [] and load.without_watcher == [], (
        f"during the roll {len(load.without_watcher)} pods got no watcher and "
        f"{len(load.refused)} were refused ({load.refused[:3]}); {load.injected} injected"
    )
    assert load.injected >= 20, load.injected
    assert _ca(core, admission) == ca_after_install
    core.create_namespaced_pod(OPTED_IN, _pod("second"))
    assert env_of(sidecar(app_running(core, OPTED_IN, "second")))["CRITICAL"] == "55"

    helm("uninstall", RELEASE, "-n", WEBHOOK_NAMESPACE, "--wait", "--timeout=120s")
    present = [c.metadata.name for c in admission.list_mutating_webhook_configuration().items]
    assert "oomdump" not in present
    core.create_namespaced_pod(OPTED_IN, _pod("after"))
    assert not has_sidecar(app_running(core, OPTED_IN, "after"))
