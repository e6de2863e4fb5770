"""Pods as users and controllers write them, and what to read back from stored pods."""

from typing import Any

from kubernetes import client


def plain_pod(
    name: str | None = None,
    *,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A minimal Go-app pod, as a user would write it."""
    metadata: dict[str, Any] = {"annotations": annotations or {}, "labels": labels or {}}
    if name:
        metadata["name"] = name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example/leaky-go-app:1.0",
                    "ports": [{"containerPort": 6060, "name": "pprof"}],
                    "resources": {"limits": {"memory": "256Mi"}},
                }
            ]
        },
    }


def container_names(pod: client.V1Pod) -> set[str]:
    return {c.name for c in pod.spec.containers}


def init_container_names(pod: client.V1Pod) -> set[str]:
    return {c.name for c in pod.spec.init_containers or []}


def has_sidecar(pod: client.V1Pod) -> bool:
    every = [*pod.spec.containers, *(pod.spec.init_containers or [])]
    return any(c.name == "oomdump-sidecar" for c in every)


def sidecar(pod: client.V1Pod) -> client.V1Container:
    for container in [*pod.spec.containers, *(pod.spec.init_containers or [])]:
        if container.name == "oomdump-sidecar":
            return container
    raise AssertionError(f"no oomdump-sidecar in pod {pod.metadata.name}")


def env_of(container: client.V1Container) -> dict[str, str | None]:
    return {e.name: e.value for e in container.env or []}
