"""One real node (kubelet 1.35 + containerd 1.6) joined to a real kube-apiserver, shared by
the tests of tests/node, with the images built from this repository loaded into it.

Cold, the first run builds kube-controller-manager, kube-scheduler, the kubelet, kube-proxy
and CoreDNS from the Go module proxy, a Debian base with mmdebstrap and the oomdump image
with buildah; all are cached under ~/.cache/oomdump, so a warm run only starts processes and
imports archives.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from testinfra.cluster import Cluster, running_cluster
from testinfra.minio import MinioServer, running_minio
from testinfra.node import Node, running_node
from testinfra.node_containerd import ContainerdError
from testinfra.node_deploy import NodePreparationError, install, prepare
from tests.node.story import wait_for_webhook_rollout

_prepared: dict[str, Path] = {}
_errors: list[str] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build (or find cached) every binary and image before a node test starts, so a cold
    build does not count against one test's timeout."""
    if session.config.option.collectonly:
        return
    if not any(item.get_closest_marker("node") for item in session.items):
        return
    try:
        _prepared.update(prepare())
    except NodePreparationError as error:
        _errors.append(str(error))


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Node]]:
    if _errors:
        pytest.fail(f"preparing the node failed: {_errors[0]}", pytrace=False)
    workdir = tmp_path_factory.mktemp("node")
    with running_cluster(workdir / "cluster", for_nodes=True) as cluster:
        try:
            with running_node(cluster, workdir / "node", _prepared) as node:
                yield cluster, node
        except ContainerdError as error:
            pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def cluster(node_cluster: tuple[Cluster, Node]) -> Cluster:
    return node_cluster[0]


@pytest.fixture(scope="session")
def node(node_cluster: tuple[Cluster, Node]) -> Node:
    return node_cluster[1]


@pytest.fixture(scope="session")
def core(cluster: Cluster) -> client.CoreV1Api:
    return client.CoreV1Api(cluster.api_client())


@pytest.fixture(scope="session")
def minio(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    """A real MinIO on loopback, which pods reach at the node's gateway address (DNAT on the
    pod bridge only, see testinfra.node_net)."""
    with running_minio(tmp_path_factory.mktemp("minio") / "data") as server:
        node.network.publish(node.network.gateway, server.port, server.port)
        yield server


@pytest.fixture(scope="session")
def webhook_rollout(
    cluster: Cluster, node: Node, minio: MinioServer, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    """deploy/ as the README installs it (S3 endpoint and region set in its defaults, as an
    operator would), rolled out: every webhook replica Ready."""
    api = cluster.api_client()
    try:
        return install(
            api, tmp_path_factory.mktemp("deploy"), f"http://{node.network.gateway}:{minio.port}"
        )
    except TimeoutError:
        # Say why: the pods' states.
        wait_for_webhook_rollout(client.AppsV1Api(api), client.CoreV1Api(api))
        raise
