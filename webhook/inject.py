"""The injection core: pod + config -> mutated pod, or the reason it was left alone.

Pure: no HTTP, no I/O, no clock. The admission layer diffs the input and the output pod
into the JSON patch, so no patch path is ever built by hand here.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from webhook.annotations import INJECT, STATUS, InvalidAnnotation, env_overrides
from webhook.config import InjectConfig, SidecarDefaults
from webhook.notice import AUDIENCE

CONTAINER_NAME = "oomdump-sidecar"
VOLUME_NAME = "oomdump-dumps"
DUMP_DIR = "/tmp/oomdump"
# An empty, read-only volume where the ServiceAccount admission plugin would mount the
# pod's API token: the plugin skips a container that already has a mount at this path
# (also when it runs again after this webhook, on reinvocation), so the watcher, which
# never calls the API, holds no credentials. automountServiceAccountToken is pod-wide and
# belongs to the app.
NO_TOKEN_VOLUME_NAME = "oomdump-no-token"
TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
# The watcher's only credential: a projected token for the audience `oomdump`, which the
# API server itself refuses (it is not for the API's audience) and the webhook accepts for
# notices about this pod alone. Away from TOKEN_MOUNT_PATH, so the shadow mount stays.
NOTIFY_VOLUME_NAME = "oomdump-notify-token"
NOTIFY_MOUNT_PATH = "/var/run/secrets/oomdump"
NOTIFY_TOKEN_FILE = f"{NOTIFY_MOUNT_PATH}/token"
NOTIFY_TOKEN_SECONDS = 600  # the shortest the API server allows; the kubelet renews it
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

    taken = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v.get("name"), str)}
    volume = _free_name(VOLUME_NAME, taken)
    no_token = _free_name(NO_TOKEN_VOLUME_NAME, {*taken, volume})
    notify_token = _free_name(NOTIFY_VOLUME_NAME, {*taken, volume, no_token})
    sidecar = _container(config, overrides, volume, no_token)
    volumes = [
        {"name": volume, "emptyDir": {}},
        {"name": no_token, "emptyDir": {"medium": "Memory", "sizeLimit": "1Ki"}},
    ]
    if config.notify is not None:
        _add_notify(sidecar, config.notify.url, config.notify.ca_pem, notify_token)
        volumes.append(_notify_volume(notify_token))
    status = {
        "version": config.version,
        "container": CONTAINER_NAME,
        "mode": config.mode,
        "image": config.image,
        "volume": volume,
        "profile": config.defaults.profile,
        "overrides": sorted(overrides),
        "notify": config.notify.url if config.notify else config.notify_off,
    }
    new_spec = dict(spec)
    new_spec["shareProcessNamespace"] = True
    if config.mode == "native":
        new_spec["initContainers"] = [sidecar, *init_containers]
    else:
        new_spec["containers"] = [*containers, sidecar]
    new_spec["volumes"] = [*(spec.get("volumes") or []), *volumes]
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


def _free_name(base: str, taken: set[str]) -> str:
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base}-{number}"
    return name


def escape_env_value(value: str) -> str:
    """The kubelet expands `$(VAR)` in an env value and turns `$$` into `$`: doubling each
    `$` makes the watcher see exactly the text it was given, so no annotation or default
    can pull a secret from `envFrom` (or any variable) into the watcher's settings."""
    return value.replace("$", "$$")


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _notify_volume(name: str) -> dict[str, Any]:
    token = {"audience": AUDIENCE, "expirationSeconds": NOTIFY_TOKEN_SECONDS, "path": "token"}
    return {"name": name, "projected": {"sources": [{"serviceAccountToken": token}]}}


def _add_notify(container: dict[str, Any], url: str, ca_pem: str, volume: str) -> None:
    container["env"] += [
        {"name": "NOTIFY_URL", "value": escape_env_value(url)},
        {"name": "NOTIFY_TOKEN_FILE", "value": NOTIFY_TOKEN_FILE},
        {"name": "NOTIFY_CA", "value": escape_env_value(ca_pem)},
    ]
    container["volumeMounts"].append(
        {"name": volume, "mountPath": NOTIFY_MOUNT_PATH, "readOnly": True}
    )


def _security(defaults: SidecarDefaults) -> dict[str, Any]:
    # Root, whatever the pod's own runAsUser/runAsNonRoot say: capabilities (and privileged
    # mode) are only effective for uid 0, and reading other containers' /proc needs them.
    # The root filesystem is read-only in every profile: the watcher writes only DUMP_DIR.
    security: dict[str, Any] = {"runAsUser": 0, "runAsNonRoot": False}
    if defaults.profile == "privileged":
        security["privileged"] = True
    else:
        # CAP_SYS_PTRACE passes the ptrace access check that /proc/<pid>/root and
        # /proc/<pid>/fd of another container's process (another uid, other capabilities,
        # not dumpable) require. Nothing else: cgroup files are root-owned and readable by
        # all, so DAC_READ_SEARCH or DAC_OVERRIDE would add nothing the watcher reads.
        security["privileged"] = False
        security["allowPrivilegeEscalation"] = False
        security["capabilities"] = {"drop": ["ALL"], "add": ["SYS_PTRACE"]}
        # The runtime's default syscall filter (a privileged container runs without one).
        security["seccompProfile"] = {"type": "RuntimeDefault"}
    security["readOnlyRootFilesystem"] = True
    return security


def _container(
    config: InjectConfig, overrides: dict[str, str], volume: str, no_token: str
) -> dict[str, Any]:
    defaults = config.defaults
    values = {**defaults.env, **overrides}
    if defaults.profile == "least-privilege":
        # The cgroupfs is read-only: `auto` would try eventfd thresholds on v1 first and
        # fall back to the plain poll; the adaptive poll is the best detector left.
        values.setdefault("DETECT_MODE", "adaptive")
    env: list[dict[str, Any]] = [
        {"name": name, "value": escape_env_value(value)}
        for name, value in values.items()
        if value != ""
    ]
    env += [
        {"name": "DUMP_DIR", "value": DUMP_DIR},
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("NODE_NAME", "spec.nodeName"),
    ]
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
    container["securityContext"] = _security(defaults)
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    container["volumeMounts"] = [
        {"name": volume, "mountPath": DUMP_DIR},
        {"name": no_token, "mountPath": TOKEN_MOUNT_PATH, "readOnly": True},
    ]
    if config.mode == "native":
        container["restartPolicy"] = "Always"
    return container
