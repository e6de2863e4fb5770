"""A real kube-apiserver + etcd and our real webhook, shared by the end-to-end tests.

The first run builds kube-apiserver and etcd from the Go module proxy (see
testinfra/kubebuild.py); later runs start from the cache in a few seconds.
"""

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from testinfra.cluster import Cluster, running_cluster
from testinfra.gobuild import GoBuildError
from testinfra.kubebuild import etcd_binary, kube_apiserver_binary
from testinfra.kustomize import render
from testinfra.webhook_server import (
    DEPLOY_DIR,
    WEBHOOK_TIMEOUT_SECONDS,
    WebhookServer,
    generate_certs,
    pointed_at,
    rendered_webhook_configuration,
)
from tests.e2e.pods import has_sidecar, plain_pod

SIDECAR_IMAGE = "registry.example/oomdump:e2e"
INJECT_LABEL = {"oomdump.io/inject": "enabled"}
INJECTION_LIVE_TIMEOUT = 30.0


_build_errors: list[str] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build (or find cached) kube-apiserver and etcd before any e2e test starts, so a cold
    build, which takes many minutes, does not count against one test's timeout."""
    if session.config.option.collectonly:
        return
    if any(item.get_closest_marker("e2e") for item in session.items):
        try:
            kube_apiserver_binary()
            etcd_binary()
        except GoBuildError as error:
            _build_errors.append(str(error))


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if _build_errors:
        pytest.fail(f"building kube-apiserver/etcd failed: {_build_errors[0]}", pytrace=False)
    with running_cluster() as running:
        yield running


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[Cluster]:
    """An API server for one module alone, for tests that need the names `deploy/` fixes
    (the MutatingWebhookConfiguration `oomdump`, which the shared cluster's webhook holds)."""
    if _build_errors:
        pytest.fail(f"building kube-apiserver/etcd failed: {_build_errors[0]}", pytrace=False)
    with running_cluster() as running:
        yield running


@pytest.fixture(scope="session")
def core(cluster: Cluster) -> client.CoreV1Api:
    return client.CoreV1Api(cluster.api_client())


@pytest.fixture(scope="session")
def apps(cluster: Cluster) -> client.AppsV1Api:
    return client.AppsV1Api(cluster.api_client())


@pytest.fixture(scope="session")
def admissionregistration(cluster: Cluster) -> client.AdmissionregistrationV1Api:
    return client.AdmissionregistrationV1Api(cluster.api_client())


@pytest.fixture(scope="session")
def deploy_objects() -> list[dict[str, Any]]:
    return render(DEPLOY_DIR)


@pytest.fixture(scope="session")
def webhook(
    cluster: Cluster,
    admissionregistration: client.AdmissionregistrationV1Api,
    deploy_objects: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WebhookServer]:
    """Our webhook, registered with the API server and seen injecting before tests run."""
    folder = tmp_path_factory.mktemp("webhook")
    certs = generate_certs(folder / "certs")
    server = WebhookServer(certs, SIDECAR_IMAGE, folder / "webhook.log")
    server.start()
    try:
        configuration = pointed_at(
            rendered_webhook_configuration(deploy_objects),
            server.url,
            certs.ca.read_bytes(),
            WEBHOOK_TIMEOUT_SECONDS,
        )
        admissionregistration.create_mutating_webhook_configuration(configuration)
        _wait_until_injecting(cluster)
        yield server
    finally:
        server.stop()


def _wait_until_injecting(cluster: Cluster) -> None:
    """The API server picks up a new webhook configuration asynchronously: dry-run pods
    until one comes back injected."""
    namespace = f"e2e-probe-{uuid.uuid4().hex[:6]}"
    cluster.create_namespace(namespace, INJECT_LABEL)
    core = client.CoreV1Api(cluster.api_client())
    deadline = time.monotonic() + INJECTION_LIVE_TIMEOUT
    while True:
        pod = core.create_namespaced_pod(namespace, plain_pod("probe"), dry_run="All")
        if has_sidecar(pod):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the API server did not call the webhook within {INJECTION_LIVE_TIMEOUT:.0f}s"
            )
        time.sleep(0.2)


@pytest.fixture
def make_namespace(cluster: Cluster) -> Callable[..., str]:
    """Create a uniquely named namespace (with its `default` ServiceAccount)."""

    def make(labels: dict[str, str] | None = None) -> str:
        name = f"e2e-{uuid.uuid4().hex[:8]}"
        cluster.create_namespace(name, labels)
        return name

    return make


@pytest.fixture
def injected_namespace(make_namespace: Callable[..., str], webhook: WebhookServer) -> str:
    return make_namespace(INJECT_LABEL)
