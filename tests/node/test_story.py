"""The whole story on a real node, as an operator would run it (README "Install into a
cluster"): deploy/ applied with the image built from the Dockerfile, the webhook rolled out
in real pods (its init container made the Secret and the caBundle), then deploy/examples in
its opted-in namespace: the real Go leak runs next to the injected watcher in one pod, the
kernel OOM-kills it under its container limit, the watcher has already uploaded its heap to
the real MinIO, and after the kubelet restarts it the next life is captured too.

MinIO listens on the host's loopback; pods reach it at the node bridge's gateway address
through a DNAT rule that matches that bridge only (testinfra.node_net), so the watcher's
real upload path (boto3, S3_ENDPOINT_URL from the defaults ConfigMap) is what carries the
dump.
"""

import contextlib
import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from testinfra.cluster import Cluster
from testinfra.image import OOMDUMP_IMAGE, leak_binary
from testinfra.minio import MinioServer
from testinfra.node import Node
from testinfra.node_deploy import EXAMPLE_BUCKET, EXAMPLE_NAMESPACE, install_example
from tests.e2e.notices import events_on
from tests.node.story import (
    container_status,
    pod_summary,
    poll,
)
from tests.sidecar.harness import pprof_top

pytestmark = pytest.mark.node

DEMO_NAMESPACE = EXAMPLE_NAMESPACE
BUCKET = EXAMPLE_BUCKET
LIMIT = 256 * 1024 * 1024  # the example app's memory limit
LIFE_TIMEOUT = 180.0


def key_pattern(pod: str) -> re.Pattern[str]:
    # {S3_PREFIX}{namespace}/{pod}/{timestamp}-{comm}-{pid}-{port}.pb.gz (DESIGN.md)
    return re.compile(
        rf"^demo/{DEMO_NAMESPACE}/{re.escape(pod)}/"
        r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z-go-memory-leak-(\d+)-8080\.pb\.gz$"
    )


def test_the_webhook_rolls_out_from_deploy_and_made_its_certificates(
    cluster: Cluster, webhook_rollout: list[dict[str, Any]]
) -> None:
    core = client.CoreV1Api(cluster.api_client())
    pods = core.list_namespaced_pod(
        "oomdump-system", label_selector="app.kubernetes.io/name=oomdump-webhook"
    ).items
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.node_name.startswith("oomdump-node-")
        (init,) = pod.status.init_container_statuses
        assert init.name == "certs-bootstrap"
        assert init.state.terminated.exit_code == 0
        for status in pod.status.container_statuses:
            assert status.ready, pod_summary(pod)
            assert status.image.endswith(OOMDUMP_IMAGE) or status.image == OOMDUMP_IMAGE
    secret = core.read_namespaced_secret("oomdump-webhook-tls", "oomdump-system")
    assert {"tls.crt", "tls.key", "ca.crt"} <= set(secret.data)
    admission = client.AdmissionregistrationV1Api(cluster.api_client())
    configuration = admission.read_mutating_webhook_configuration("oomdump")
    for hook in configuration.webhooks:
        assert hook.client_config.ca_bundle, hook.name


@pytest.fixture(scope="module")
def leak_pod(
    cluster: Cluster,
    minio: MinioServer,
    webhook_rollout: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """deploy/examples applied in its labelled namespace with MinIO's credentials in the
    oomdump-s3 Secret; the name of its (one) pod."""
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    minio.make_bucket(BUCKET)
    objects = install_example(
        api, tmp_path_factory.mktemp("examples"), minio.access_key, minio.secret_key
    )
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    assert namespaces[0]["metadata"]["labels"]["oomdump.io/inject"] == "enabled"

    def scheduled() -> str | None:
        pods = core.list_namespaced_pod(
            DEMO_NAMESPACE, label_selector="app.kubernetes.io/name=go-memory-leak"
        ).items
        return pods[0].metadata.name if pods else None

    name = poll("the leak pod created", 60, scheduled)
    yield name
    apps = client.AppsV1Api(api)
    with contextlib.suppress(ApiException):
        apps.delete_namespaced_deployment("go-memory-leak", DEMO_NAMESPACE)


def _profile_keys(minio: MinioServer, pod: str) -> list[tuple[int, str]]:
    """(pid, key) of every heap profile of `pod` in the bucket, oldest first."""
    pattern = key_pattern(pod)
    listing = minio.client().list_objects_v2(Bucket=BUCKET, Prefix=f"demo/{DEMO_NAMESPACE}/")
    found = [(pattern.match(item["Key"]), item["Key"]) for item in listing.get("Contents", [])]
    return [(int(match[1]), key) for match, key in found if match]


def _dumps(minio: MinioServer, pod: str) -> dict[int, str]:
    """pid -> the key of one heap profile of that pid (a capture saves two: any will do)."""
    return dict(_profile_keys(minio, pod))


def _oom_killed_lives(core: client.CoreV1Api, pod: str) -> tuple[client.V1Pod, int] | None:
    current = core.read_namespaced_pod(pod, DEMO_NAMESPACE)
    app = container_status(current, "app")
    if app is None or app.last_state is None or app.last_state.terminated is None:
        return None
    return current, app.restart_count


def test_the_leak_is_injected_oom_killed_captured_and_captured_again_after_restart(
    cluster: Cluster, node: Node, minio: MinioServer, leak_pod: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(cluster.api_client())
    pod = core.read_namespaced_pod(leak_pod, DEMO_NAMESPACE)
    names = [c.name for c in pod.spec.containers]
    assert names == ["app", "oomdump-sidecar"], names
    assert pod.spec.share_process_namespace is True
    watcher_spec = pod.spec.containers[1]
    assert watcher_spec.image == OOMDUMP_IMAGE

    # Life 1: the kernel kills the app under its container limit; its heap is in the bucket.
    def first_oom() -> client.V1Pod | None:
        lives = _oom_killed_lives(core, leak_pod)
        return lives[0] if lives else None

    try:
        pod = poll("the app OOM-killed", LIFE_TIMEOUT, first_oom, every=1.0)
    except TimeoutError as error:
        raise AssertionError(
            f"{error}\n{pod_summary(core.read_namespaced_pod(leak_pod, DEMO_NAMESPACE))}"
        ) from None
    app = container_status(pod, "app")
    assert app is not None
    assert app.last_state.terminated.reason == "OOMKilled"
    assert app.last_state.terminated.exit_code == 137
    first = poll("the first life's dump", 30, lambda: _dumps(minio, leak_pod) or None)

    # The profile names the leak; the metadata carries the kubelet-made cgroup's limit and
    # the pod identity the downward API gave the watcher.
    pid, key = min(first.items())
    assert pid != 1, "PID 1 of the shared namespace is the pause process, never captured"
    s3 = minio.client()
    profile = tmp_path / "first.pb.gz"
    profile.write_bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert gzip.decompress(profile.read_bytes())
    assert "main.leakDocuments" in pprof_top(leak_binary(), profile)
    metadata = json.loads(
        s3.get_object(Bucket=BUCKET, Key=key.removesuffix(".pb.gz") + ".json")["Body"].read()
    )
    assert metadata["comm"] == "go-memory-leak"
    assert metadata["limit"] == LIMIT
    assert metadata["usage"] >= 0.6 * LIMIT

    # `kubectl describe pod` shows it: the watcher's notice went to the webhook's Service
    # (CoreDNS name, kube-proxy ClusterIP), which wrote the Event naming container, memory,
    # where the dump is and the leaking function.
    # Repeats aggregate into one Event per (reason, container, S3 or local), whose message
    # is the latest notice's: it names one of the pod's dumps in the bucket.
    uploaded = re.compile(rf"s3://{BUCKET}/(\S+\.pb\.gz)")

    def uploaded_event() -> client.CoreV1Event | None:
        for event in events_on(core, pod):
            found = uploaded.search(event.message or "")
            if event.reason == "HeapProfileCaptured" and found:
                return event
        return None

    try:
        event = poll("the HeapProfileCaptured Event", 60, uploaded_event)
    except TimeoutError as error:
        seen = [(e.reason, e.message) for e in events_on(core, pod)]
        raise AssertionError(f"{error}; events on the pod: {seen}") from None
    assert event.type == "Normal"
    named = uploaded.search(event.message)
    assert named and named[1] in {key for _, key in _profile_keys(minio, leak_pod)}, event.message
    assert event.source.component == "oomdump-webhook"
    assert "container app, process go-memory-leak" in event.message
    assert f"of {LIMIT >> 20}Mi" in event.message
    assert "top: main.leakDocuments" in event.message

    # Life 2: the kubelet restarts the app in the same pod; a new PID is captured as well.
    def second_dump() -> dict[int, str] | None:
        dumps = _dumps(minio, leak_pod)
        return dumps if set(dumps) - set(first) else None

    try:
        later = poll("a dump of the restarted app", LIFE_TIMEOUT, second_dump, every=1.0)
    except TimeoutError as error:
        raise AssertionError(
            f"{error}\n{pod_summary(core.read_namespaced_pod(leak_pod, DEMO_NAMESPACE))}"
        ) from None
    assert set(later) - set(first)
    pod = core.read_namespaced_pod(leak_pod, DEMO_NAMESPACE)
    app = container_status(pod, "app")
    watcher = container_status(pod, "oomdump-sidecar")
    assert app is not None and watcher is not None
    assert app.restart_count >= 1
    assert watcher.restart_count == 0, pod_summary(pod)
    assert pod.metadata.uid == core.read_namespaced_pod(leak_pod, DEMO_NAMESPACE).metadata.uid
    # The app's group is the kubelet's, below the node's own cgroup root.
    groups = list((node.cgroup("memory") / "kubepods").rglob(f"pod{pod.metadata.uid}"))
    assert groups, f"no pod group for {pod.metadata.uid} below {node.cgroup('memory')}"
