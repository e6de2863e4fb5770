"""The injection core: pod + config -> mutated pod, or the reason it was left alone.

Pure: no HTTP, no I/O, no clock. The admission layer diffs the input and the output pod
into the JSON patch, so no patch path is ever built by hand here.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from webhook.annotations import INJECT, STATUS, InvalidAnnotation, env_overrides
from webhook.config import InjectConfig

CONTAINER_NAME = "oomdump-sidecar"
VOLUME_NAME = "oomdump-dumps"
DUMP_DIR = "/tmp/oomdump"
COMMAND = ("python", "-m", "sidecar")
WARNING_LIMIT = 119  # Kubernetes asks for warnings shorter than 120 characters

# Skip and denial reasons: one vocabulary for responses, logs and metric labels.
EXCLUDED_NAMESPACE = "excluded-namespace"
OPT_OUT = "opt-out"
ALREADY_INJECTED = "already-injected"
NAME_TAKEN = "container-name-taken"
HOST_PID = "host-pid"
WINDOWS = "windows-pod"
INVALID_ANNOTATION = "invalid-annotation"
INJECTED = "injected"

Result = Literal["injected", "skipped", "denied"]


class MalformedPod(ValueError):
    """The object is not shaped like a Pod (the message says which field is wrong)."""


@dataclass(frozen=True)
class Outcome:
    result: Result
    reason: str
    pod: dict[str, Any]  # the mutated pod; the input itself when nothing was injected
    message: str = ""  # why it was skipped or denied (full length, for logs and status)
    warnings: tuple[str, ...] = field(default=())


def warning(reason: str, detail: str, verdict: str = "sidecar not injected") -> str:
    text = f"oomdump: {verdict} ({reason}): {detail}"
    return text if len(text) <= WARNING_LIMIT else text[: WARNING_LIMIT - 3] + "..."


def skipped(pod: dict[str, Any], reason: str, detail: str) -> Outcome:
    return Outcome("skipped", reason, pod, detail, (warning(reason, detail),))


def inject(pod: Any, config: InjectConfig, namespace: str | None = None) -> Outcome:
    """Decide about one pod being created in `namespace` (request.namespace is the truth).

    The returned pod shares unchanged sub-objects with the input: treat both as read-only.
    """
    metadata, spec = _shape(pod)
    namespace = namespace or metadata.get("namespace") or "default"
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    labels: Mapping[str, str] = metadata.get("labels") or {}
    containers = spec.get("containers") or []
    init_containers = spec.get("initContainers") or []

    if namespace in config.excluded_namespaces:
        return skipped(pod, EXCLUDED_NAMESPACE, f"namespace {namespace} is never injected")
    if labels.get(INJECT) == "disabled":
        return skipped(pod, OPT_OUT, f"label {INJECT}=disabled")
    if annotations.get(INJECT) == "disabled":
        return skipped(pod, OPT_OUT, f"annotation {INJECT}=disabled")
    if STATUS in annotations:
        return skipped(pod, ALREADY_INJECTED, f"annotation {STATUS} is present")
    if any(c.get("name") == CONTAINER_NAME for c in [*containers, *init_containers]):
        return skipped(pod, NAME_TAKEN, f"a container is already named {CONTAINER_NAME}")
    if spec.get("hostPID") is True:
        return skipped(pod, HOST_PID, "hostPID pods cannot share a process namespace")
    if isinstance(spec.get("os"), dict) and spec["os"].get("name") == "windows":
        return skipped(pod, WINDOWS, "the watcher runs on Linux only")
    try:
        overrides = env_overrides(annotations)
    except InvalidAnnotation as error:
        refusal = warning(INVALID_ANNOTATION, str(error), verdict="refused")
        return Outcome("denied", INVALID_ANNOTATION, pod, str(error), (refusal,))

    volume = _free_volume_name(spec.get("volumes") or [])
    sidecar = _container(config, overrides, volume)
    status = {
        "version": config.version,
        "container": CONTAINER_NAME,
        "mode": config.mode,
        "image": config.image,
        "volume": volume,
        "overrides": sorted(overrides),
    }
    new_spec = dict(spec)
    new_spec["shareProcessNamespace"] = True
    if config.mode == "native":
        new_spec["initContainers"] = [sidecar, *init_containers]
    else:
        new_spec["containers"] = [*containers, sidecar]
    new_spec["volumes"] = [*(spec.get("volumes") or []), {"name": volume, "emptyDir": {}}]
    new_metadata = dict(metadata)
    new_metadata["annotations"] = {
        **annotations,
        STATUS: json.dumps(status, sort_keys=True, separators=(",", ":")),
    }
    mutated = dict(pod)
    mutated["metadata"] = new_metadata
    mutated["spec"] = new_spec
    return Outcome("injected", INJECTED, mutated)


def _shape(pod: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    if not isinstance(pod, dict):
        raise MalformedPod("the pod must be a JSON object")
    metadata = _or_empty(pod.get("metadata"), {})
    spec = pod.get("spec")
    if not isinstance(metadata, dict):
        raise MalformedPod("pod metadata must be an object")
    if not isinstance(metadata.get("namespace", ""), str | None):
        raise MalformedPod("pod metadata.namespace must be a string")
    for key in ("annotations", "labels"):
        values = _or_empty(metadata.get(key), {})
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise MalformedPod(f"pod metadata.{key} must map strings to strings")
    if not isinstance(spec, dict):
        raise MalformedPod("pod spec is missing or not an object")
    for key in ("containers", "initContainers", "volumes"):
        items = _or_empty(spec.get(key), [])
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise MalformedPod(f"pod spec.{key} must be a list of objects")
    return metadata, spec


def _or_empty(value: Any, empty: dict[str, Any] | list[Any]) -> Any:
    """JSON null counts as absent; any other value is checked as it is."""
    return empty if value is None else value


def _free_volume_name(volumes: list[dict[str, Any]]) -> str:
    taken = {volume.get("name") for volume in volumes}
    name, number = VOLUME_NAME, 1
    while name in taken:
        number += 1
        name = f"{VOLUME_NAME}-{number}"
    return name


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _container(config: InjectConfig, overrides: dict[str, str], volume: str) -> dict[str, Any]:
    defaults = config.defaults
    values = {**defaults.env, **overrides}
    env: list[dict[str, Any]] = [
        {"name": name, "value": value} for name, value in values.items() if value != ""
    ]
    env += [
        {"name": "DUMP_DIR", "value": DUMP_DIR},
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("NODE_NAME", "spec.nodeName"),
    ]
    # Root, whatever the pod's own runAsUser/runAsNonRoot say: capabilities (and privileged
    # mode) are only effective for uid 0, and reading other containers' /proc needs them.
    security: dict[str, Any] = {"runAsUser": 0, "runAsNonRoot": False}
    if defaults.privileged:
        security["privileged"] = True
    else:
        # Enough to read /proc/<pid>/root and /proc/<pid>/net of the other containers.
        security["privileged"] = False
        security["capabilities"] = {"add": ["SYS_PTRACE"]}
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": config.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(COMMAND),
        "env": env,
    }
    if defaults.env_from:
        container["envFrom"] = [dict(item) for item in defaults.env_from]
    container["resources"] = {key: dict(value) for key, value in defaults.resources.items()}
    container["securityContext"] = security
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    container["volumeMounts"] = [{"name": volume, "mountPath": DUMP_DIR}]
    if config.mode == "native":
        container["restartPolicy"] = "Always"
    return container
