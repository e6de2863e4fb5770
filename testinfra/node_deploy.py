"""oomdump on the test node as an operator installs it: everything the node needs built or
found cached, `deploy/` (and `deploy/examples`) applied as the README says with the image
names pointed at the images built here, and the webhook's rollout awaited.

Used by tests/node and by `make e2e-cluster` (testinfra.try_cluster).
"""

import copy
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, utils

from testinfra import apt
from testinfra.gobuild import GoBuildError
from testinfra.helm import helm_binary
from testinfra.image import LEAK_IMAGE, OOMDUMP_IMAGE, ImageBuildError, all_archives, tools_missing
from testinfra.kubebuild import (
    etcd_binary,
    kube_apiserver_binary,
    kube_controller_manager_binary,
    kube_proxy_binary,
    kube_scheduler_binary,
    kubelet_binary,
)
from testinfra.kustomize import kustomize_binary, render
from testinfra.node_services import coredns_binary

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")
# The README's image names, pointed at the images built here.
IMAGES = {"ghcr.io/oomdump/oomdump": OOMDUMP_IMAGE, "ghcr.io/oomdump/go-memory-leak": LEAK_IMAGE}
WEBHOOK_NAMESPACE = "oomdump-system"
WEBHOOK_DEPLOYMENT = "oomdump-webhook"
WEBHOOK_REPLICAS = 2  # deploy/base
ROLLOUT_TIMEOUT = 240.0
NODE_TOOLS = ("containerd", "runc", "ctr", "iptables", "ip", "nft")
# Installed when missing, so `make test` sets up a fresh machine.
NODE_PACKAGES = (
    "containerd",
    "runc",
    "iptables",
    "iproute2",
    "containernetworking-plugins",
    "buildah",
    "mmdebstrap",
    "nftables",
)


class NodePreparationError(RuntimeError):
    """Something the node needs could not be installed or built; the message says what."""


def prepare() -> dict[str, Path]:
    """Install the node's Debian packages, build (or find cached) every binary and image;
    the images' docker-archives by name."""
    try:
        apt.ensure(NODE_PACKAGES)
    except apt.AptError as error:
        raise NodePreparationError(
            f"installing the node's Debian packages failed: {error}"
        ) from None
    missing = [tool for tool in NODE_TOOLS if shutil.which(tool) is None] + tools_missing()
    if missing:
        raise NodePreparationError(
            f"missing {', '.join(missing)} (Debian packages {', '.join(NODE_PACKAGES)})"
        )
    try:
        for build in (
            kube_apiserver_binary,
            etcd_binary,
            kube_controller_manager_binary,
            kube_scheduler_binary,
            kubelet_binary,
            kube_proxy_binary,
            coredns_binary,
            helm_binary,
        ):
            build()
        return all_archives()
    except (GoBuildError, ImageBuildError) as error:
        raise NodePreparationError(str(error)) from None


def poll(what: str, timeout: float, probe: Callable[[], T | None], every: float = 0.5) -> T:
    """`probe()` until it returns something other than None; TimeoutError at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(every)


def prepared_copy(source: Path, dest: Path, images: dict[str, str]) -> Path:
    """`source` copied to `dest`, with `kustomize edit set image OLD=NEW` run in each folder
    of it that names OLD (deploy/base for the oomdump image, as the README says)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest)
    for kustomization in sorted(dest.rglob("kustomization.yaml")):
        text = kustomization.read_text()
        for old, new in images.items():
            if f"name: {old}" in text:
                subprocess.run(
                    [str(kustomize_binary()), "edit", "set", "image", f"{old}={new}"],
                    cwd=kustomization.parent,
                    check=True,
                    capture_output=True,
                    timeout=60,
                )
    return dest


def set_watcher_defaults(deploy: Path, env: dict[str, str]) -> None:
    """Edit deploy/base/defaults.yaml as an operator would (the S3 endpoint and region)."""
    path = deploy / "base" / "defaults.yaml"
    defaults = yaml.safe_load(path.read_text())
    defaults["env"].update(env)
    path.write_text(yaml.safe_dump(defaults))


def apply(api: client.ApiClient, objects: list[dict[str, Any]]) -> None:
    """Create every rendered object, as `kubectl apply -k` would on an empty cluster."""
    for obj in sorted(objects, key=lambda o: o["kind"] != "Namespace"):
        utils.create_from_dict(api, copy.deepcopy(obj))


def webhook_rolled_out(apps: client.AppsV1Api, replicas: int = WEBHOOK_REPLICAS) -> bool | None:
    """True once the webhook Deployment's latest spec runs `replicas` available pods and no
    old one is left (what `kubectl rollout status` waits for)."""
    deployment = apps.read_namespaced_deployment(WEBHOOK_DEPLOYMENT, WEBHOOK_NAMESPACE)
    status = deployment.status
    done = (
        (status.observed_generation or 0) >= (deployment.metadata.generation or 0)
        and (status.updated_replicas or 0) == replicas
        and (status.available_replicas or 0) == replicas
        and (status.replicas or 0) == replicas
    )
    return True if done else None


def install(api: client.ApiClient, workdir: Path, s3_endpoint: str) -> list[dict[str, Any]]:
    """deploy/ applied with the local images and `s3_endpoint` in the watcher defaults;
    returns once every webhook replica is available. The rendered objects."""
    deploy = prepared_copy(REPO / "deploy", workdir / "deploy", IMAGES)
    set_watcher_defaults(deploy, {"S3_ENDPOINT_URL": s3_endpoint, "AWS_REGION": "us-east-1"})
    objects = render(deploy)
    apply(api, objects)
    apps = client.AppsV1Api(api)
    poll("the webhook Deployment rolled out", ROLLOUT_TIMEOUT, lambda: webhook_rolled_out(apps))
    return objects


EXAMPLE_NAMESPACE = "oomdump-demo"  # deploy/examples
EXAMPLE_BUCKET = "my-oomdump-dumps"  # its oomdump.io/bucket annotation
INJECTION_TIMEOUT = 60.0
_PROBE_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "probe"},
    "spec": {"containers": [{"name": "app", "image": LEAK_IMAGE,
                             "resources": {"limits": {"memory": "64Mi"}}}]},
}  # fmt: skip


def wait_until_injecting(core: client.CoreV1Api, namespace: str) -> client.V1Pod:
    """The caBundle (or a rolled webhook) reaches the API server's webhook client
    asynchronously: dry-run a pod until it comes back injected; that pod."""

    def injected() -> client.V1Pod | None:
        pod = core.create_namespaced_pod(namespace, copy.deepcopy(_PROBE_POD), dry_run="All")
        containers = (pod.spec.containers or []) + (pod.spec.init_containers or [])
        return pod if any(c.name == "oomdump-sidecar" for c in containers) else None

    return poll("the webhook injecting", INJECTION_TIMEOUT, injected)


def install_example(
    api: client.ApiClient, workdir: Path, access_key: str, secret_key: str
) -> list[dict[str, Any]]:
    """deploy/examples applied as the README says, once its namespace is opted in and holds
    the `oomdump-s3` Secret with these S3 credentials (the bucket must exist). The objects."""
    examples = prepared_copy(REPO / "deploy" / "examples", workdir / "examples", IMAGES)
    objects = render(examples)
    core = client.CoreV1Api(api)
    apply(api, [o for o in objects if o["kind"] == "Namespace"])
    poll(
        "the default ServiceAccount",
        30,
        lambda: True if core.list_namespaced_service_account(EXAMPLE_NAMESPACE).items else None,
    )
    core.create_namespaced_secret(
        EXAMPLE_NAMESPACE,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="oomdump-s3"),
            string_data={"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key},
        ),
    )
    wait_until_injecting(core, EXAMPLE_NAMESPACE)
    apply(api, [o for o in objects if o["kind"] != "Namespace"])
    return objects
