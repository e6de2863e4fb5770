"""What a real kube-apiserver stores when our webhook is registered the way deploy/ does it."""

import json
import time
from collections.abc import Callable

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from testinfra.webhook_server import WEBHOOK_TIMEOUT_SECONDS, WebhookServer
from tests.e2e.pods import (
    container_names,
    env_of,
    has_sidecar,
    init_container_names,
    plain_pod,
    sidecar,
)

pytestmark = pytest.mark.e2e

STATUS = "oomdump.io/status"


def test_pod_in_labeled_namespace_is_injected_with_annotation_overrides(
    core: client.CoreV1Api, injected_namespace: str
) -> None:
    overrides = {
        "oomdump.io/critical": "85",
        "oomdump.io/cooldown": "2m",
        "oomdump.io/watch-time": "50ms",
        "oomdump.io/ports": "6060",
    }
    core.create_namespaced_pod(injected_namespace, plain_pod("app", annotations=overrides))

    stored = core.read_namespaced_pod("app", injected_namespace)
    assert stored.spec.share_process_namespace is True
    assert container_names(stored) == {"app", "oomdump-sidecar"}
    watcher = sidecar(stored)
    assert watcher.image == "registry.example/oomdump:e2e"
    env = env_of(watcher)
    assert env["CRITICAL"] == "85"
    assert env["COOLDOWN"] == "2m"
    assert env["WATCH_TIME"] == "50ms"
    assert env["PPROF_PORTS"] == "6060"
    downward = {e.name: e.value_from.field_ref.field_path for e in watcher.env if e.value_from}
    assert downward["POD_NAME"] == "metadata.name"
    assert downward["POD_NAMESPACE"] == "metadata.namespace"
    assert downward["NODE_NAME"] == "spec.nodeName"
    assert STATUS in stored.metadata.annotations
    json.loads(stored.metadata.annotations[STATUS])


def test_pod_in_unlabeled_namespace_is_stored_unchanged(
    core: client.CoreV1Api, make_namespace: Callable[..., str], webhook: WebhookServer
) -> None:
    namespace = make_namespace()
    core.create_namespaced_pod(namespace, plain_pod("app"))

    stored = core.read_namespaced_pod("app", namespace)
    assert container_names(stored) == {"app"}
    assert not stored.spec.share_process_namespace
    assert STATUS not in (stored.metadata.annotations or {})


@pytest.mark.parametrize("where", ["label", "annotation"])
def test_opted_out_pod_in_labeled_namespace_is_stored_unchanged(
    core: client.CoreV1Api, injected_namespace: str, where: str
) -> None:
    opt_out = {"oomdump.io/inject": "disabled"}
    pod = plain_pod("app", **{f"{where}s": opt_out})
    core.create_namespaced_pod(injected_namespace, pod)

    stored = core.read_namespaced_pod("app", injected_namespace)
    assert container_names(stored) == {"app"}
    assert not stored.spec.share_process_namespace
    assert STATUS not in (stored.metadata.annotations or {})


def test_invalid_override_is_refused_with_our_message(
    core: client.CoreV1Api, injected_namespace: str
) -> None:
    pod = plain_pod("app", annotations={"oomdump.io/critical": "150"})

    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(injected_namespace, pod)

    assert refused.value.status == 400
    message = json.loads(refused.value.body)["message"]
    assert "denied the request" in message
    assert "oomdump.io/critical" in message
    assert "150" in message
    assert "99" in message
    assert core.list_namespaced_pod(injected_namespace).items == []


def test_pods_are_created_uninjected_while_the_webhook_is_down(
    core: client.CoreV1Api, injected_namespace: str, webhook: WebhookServer
) -> None:
    webhook.stop()
    try:
        core.create_namespaced_pod(injected_namespace, plain_pod("while-down"))
    finally:
        webhook.start()

    stored = core.read_namespaced_pod("while-down", injected_namespace)
    assert container_names(stored) == {"app"}
    assert STATUS not in (stored.metadata.annotations or {})
    core.create_namespaced_pod(injected_namespace, plain_pod("after-restart"))
    assert has_sidecar(core.read_namespaced_pod("after-restart", injected_namespace))


def test_pods_are_created_uninjected_when_the_webhook_hangs(
    core: client.CoreV1Api, injected_namespace: str, webhook: WebhookServer
) -> None:
    webhook.freeze()
    started = time.monotonic()
    try:
        core.create_namespaced_pod(injected_namespace, plain_pod("while-hung"))
    finally:
        webhook.thaw()
    waited = time.monotonic() - started

    stored = core.read_namespaced_pod("while-hung", injected_namespace)
    assert container_names(stored) == {"app"}
    # The API server gave up after the configuration's timeoutSeconds, not its own 30 s.
    assert WEBHOOK_TIMEOUT_SECONDS <= waited < WEBHOOK_TIMEOUT_SECONDS + 10


def test_server_side_dry_run_returns_the_injected_pod_and_stores_nothing(
    core: client.CoreV1Api, injected_namespace: str
) -> None:
    returned = core.create_namespaced_pod(injected_namespace, plain_pod("app"), dry_run="All")

    assert returned.spec.share_process_namespace is True
    assert has_sidecar(returned)
    assert core.list_namespaced_pod(injected_namespace).items == []


def test_controller_shaped_pod_is_injected(
    core: client.CoreV1Api, apps: client.AppsV1Api, injected_namespace: str
) -> None:
    # No controller-manager runs, so the ReplicaSet stays inert: the test creates its pod.
    owner = apps.create_namespaced_replica_set(
        injected_namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "leaky-5d9c7b8f6"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "leaky"}},
                "template": {"metadata": {"labels": {"app": "leaky"}}, "spec": plain_pod()["spec"]},
            },
        },
    )
    pod = plain_pod(labels={"app": "leaky", "pod-template-hash": "5d9c7b8f6"})
    pod["metadata"]["generateName"] = "leaky-5d9c7b8f6-"
    pod["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": owner.metadata.name,
            "uid": owner.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]

    created = core.create_namespaced_pod(injected_namespace, pod)

    assert created.metadata.name.startswith("leaky-5d9c7b8f6-")
    stored = core.read_namespaced_pod(created.metadata.name, injected_namespace)
    assert has_sidecar(stored)
    assert stored.spec.share_process_namespace is True
    assert stored.metadata.owner_references[0].uid == owner.metadata.uid
    # The ServiceAccount admission plugin adds the projected token volume before webhooks run.
    projected = [v for v in stored.spec.volumes if v.projected is not None]
    assert projected, "expected the kube-api-access projected volume"
    app = next(c for c in stored.spec.containers if c.name == "app")
    assert any(m.name == projected[0].name for m in app.volume_mounts)


def test_native_sidecar_mode_produces_a_pod_the_server_accepts(
    core: client.CoreV1Api, injected_namespace: str, webhook: WebhookServer
) -> None:
    webhook.stop()
    webhook.start(mode="native")
    try:
        core.create_namespaced_pod(injected_namespace, plain_pod("app"))
    finally:
        webhook.stop()
        webhook.start()

    stored = core.read_namespaced_pod("app", injected_namespace)
    assert container_names(stored) == {"app"}
    assert init_container_names(stored) == {"oomdump-sidecar"}
    assert sidecar(stored).restart_policy == "Always"
    assert stored.spec.share_process_namespace is True
