"""Helpers for the node tests: bounded waits on real pods and on the webhook (installing
oomdump on the node is testinfra.node_deploy's, shared with `make e2e-cluster`)."""

from kubernetes import client

from testinfra.node_deploy import (
    ROLLOUT_TIMEOUT,
    WEBHOOK_NAMESPACE,
    WEBHOOK_REPLICAS,
    poll,
    wait_until_injecting,
    webhook_rolled_out,
)

__all__ = ["poll", "wait_until_injecting"]


def container_status(pod: client.V1Pod, name: str) -> client.V1ContainerStatus | None:
    for status in pod.status.container_statuses or []:
        if status.name == name:
            return status
    return None


def pod_summary(pod: client.V1Pod) -> str:
    """Phase and each container's state, for failure messages."""
    parts = [f"{pod.metadata.name} {pod.status.phase}"]
    for status in (pod.status.init_container_statuses or []) + (
        pod.status.container_statuses or []
    ):
        parts.append(f"{status.name}: restarts={status.restart_count} state={status.state}")
    return "\n".join(parts)


def wait_for_webhook_rollout(
    apps: client.AppsV1Api, core: client.CoreV1Api, replicas: int = WEBHOOK_REPLICAS
) -> None:
    try:
        poll(
            "the webhook Deployment rolled out",
            ROLLOUT_TIMEOUT,
            lambda: webhook_rolled_out(apps, replicas),
        )
    except TimeoutError as error:
        pods = core.list_namespaced_pod(WEBHOOK_NAMESPACE).items
        raise AssertionError(f"{error}\n" + "\n".join(pod_summary(p) for p in pods)) from None


RUN_TIMEOUT = 120.0


def app_running(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod:
    """The pod once its `app` container runs; AssertionError with its state at RUN_TIMEOUT."""

    def probe() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, namespace)
        app = container_status(pod, "app")
        return pod if app is not None and app.state.running is not None else None

    try:
        return poll(f"{namespace}/{name} running", RUN_TIMEOUT, probe)
    except TimeoutError as error:
        pod = core.read_namespaced_pod(name, namespace)
        raise AssertionError(f"{error}\n{pod_summary(pod)}") from None
