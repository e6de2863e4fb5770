"""What the injector needs to know: sidecar image and mode, and the watcher defaults.

The defaults come from built-in values overlaid by an optional YAML file (the
`oomdump-sidecar-defaults` ConfigMap, key `defaults.yaml`), validated here so that a bad
file is refused with a message instead of producing pods the watcher cannot run in: each
`env` variable the watcher knows is checked with its own rule (oomdump.watcher_env).
"""

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from oomdump import __version__, contract, watcher_env

SidecarMode = Literal["container", "native"]
SIDECAR_MODES: tuple[SidecarMode, ...] = ("container", "native")
# `privileged`: what the design asks for (writable cgroupfs: v1 eventfd thresholds and the
# emergency brake). `least-privilege`: no privileged mode, only CAP_SYS_PTRACE; the
# cgroupfs is then read-only, so the watcher falls back to the adaptive poll.
PrivilegeProfile = Literal["privileged", "least-privilege"]
PRIVILEGE_PROFILES: tuple[PrivilegeProfile, ...] = ("privileged", "least-privilege")
EXCLUDED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
# Set by the injector itself (downward API, the dump volume, the notice target), never by
# the defaults file.
RESERVED_ENV = frozenset(
    {
        "DUMP_DIR",
        "POD_NAME",
        "POD_NAMESPACE",
        "NODE_NAME",
        "NOTIFY_URL",
        "NOTIFY_TOKEN_FILE",
        "NOTIFY_CA",
    }
)
NOTIFY_OFF = "off: the webhook serves no notices"

# Written into every injected watcher, so a pod shows what it runs with (oomdump.contract).
BUILTIN_ENV: dict[str, str] = {
    name: contract.BY_NAME[name].default or "" for name in ("CRITICAL", "COOLDOWN", "WATCH_TIME")
}
BUILTIN_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "10m", "memory": "64Mi"},  # 18 MiB idle, 54 MiB after an upload
    "limits": {"cpu": "200m", "memory": "128Mi"},
}
# `privileged` (a boolean) is the older spelling of the profile: true is `privileged`,
# false is `least-privilege`.
_FILE_KEYS = frozenset({"env", "envFrom", "resources", "privilegeProfile", "privileged"})


class DefaultsError(ValueError):
    """The defaults file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class SidecarDefaults:
    env: dict[str, str] = field(default_factory=lambda: dict(BUILTIN_ENV))
    env_from: list[dict[str, Any]] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(BUILTIN_RESOURCES))
    profile: PrivilegeProfile = "privileged"

    @property
    def privileged(self) -> bool:
        return self.profile == "privileged"


@dataclass(frozen=True)
class Notify:
    """Where the watcher sends its notices: the webhook's Service, and the CA bundle (PEM)
    that signs the certificate the webhook serves."""

    url: str
    ca_pem: str


def notify_url(service: str, namespace: str, port: int) -> str:
    return f"https://{service}.{namespace}.svc:{port}/notice"


@dataclass(frozen=True)
class InjectConfig:
    image: str
    mode: SidecarMode = "container"
    own_namespace: str = "oomdump-system"
    defaults: SidecarDefaults = field(default_factory=SidecarDefaults)
    version: str = __version__
    notify: Notify | None = None
    notify_off: str = NOTIFY_OFF  # why there is no `notify`, for the status annotation

    @property
    def excluded_namespaces(self) -> frozenset[str]:
        return EXCLUDED_NAMESPACES | {self.own_namespace}


def parse_defaults(text: str, source: str) -> SidecarDefaults:
    """Built-in defaults overlaid by a defaults.yaml document; DefaultsError when invalid."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise DefaultsError(f"{source}: not valid YAML: {error}") from None
    if document is None:
        return SidecarDefaults()
    if not isinstance(document, dict):
        raise DefaultsError(f"{source}: expected a mapping with keys {sorted(_FILE_KEYS)}")
    unknown = sorted(set(document) - _FILE_KEYS)
    if unknown:
        raise DefaultsError(f"{source}: unknown keys {unknown}; allowed: {sorted(_FILE_KEYS)}")
    env = dict(BUILTIN_ENV)
    env.update(_parse_env(document.get("env") or {}, source))
    env_from = document.get("envFrom") or []
    if not isinstance(env_from, list) or not all(isinstance(item, dict) for item in env_from):
        raise DefaultsError(f"{source}: envFrom must be a list of EnvFromSource mappings")
    resources = document.get("resources", BUILTIN_RESOURCES)
    if not isinstance(resources, dict) or not set(resources) <= {"requests", "limits"}:
        raise DefaultsError(f"{source}: resources must be a mapping of requests/limits")
    try:
        watcher_env.read(env)  # the rules between variables (each alone is checked above)
    except ValueError as error:
        raise DefaultsError(f"{source}: env: {error}") from None
    profile = _parse_profile(document, source)
    if profile == "least-privilege":
        _check_unprivileged_env(env, source)
    return SidecarDefaults(
        env={name: value for name, value in env.items() if value != ""},
        env_from=copy.deepcopy(env_from),
        resources=copy.deepcopy(resources),
        profile=profile,
    )


def _check_unprivileged_env(env: dict[str, str], source: str) -> None:
    """Under least-privilege the cgroupfs is read-only: no eventfd threshold can be armed
    and no limit raised, so asking for either is refused rather than silently not done.
    The values are read as the watcher reads them (they passed its rules already)."""
    needs_writable = (
        ("DETECT_MODE=events", watcher_env.BY_NAME["DETECT_MODE"].read(env) == "events"),
        ("EMERGENCY_BRAKE", watcher_env.BY_NAME["EMERGENCY_BRAKE"].read(env) is True),
    )
    for what, asked in needs_writable:
        if asked:
            raise DefaultsError(
                f"{source}: {what} needs a writable cgroupfs, which privilegeProfile"
                " least-privilege does not give; use privilegeProfile: privileged"
            )


def _parse_profile(document: dict[str, Any], source: str) -> PrivilegeProfile:
    choices = ", ".join(PRIVILEGE_PROFILES)
    profile = document.get("privilegeProfile")
    if profile is not None and profile not in PRIVILEGE_PROFILES:
        raise DefaultsError(f"{source}: privilegeProfile must be one of {choices}, not {profile!r}")
    if "privileged" not in document:
        return profile or "privileged"
    privileged = document["privileged"]
    if not isinstance(privileged, bool):
        raise DefaultsError(f"{source}: privileged must be true or false, not {privileged!r}")
    implied: PrivilegeProfile = "privileged" if privileged else "least-privilege"
    if profile is not None and profile != implied:
        raise DefaultsError(
            f"{source}: privileged: {str(privileged).lower()} contradicts privilegeProfile:"
            f" {profile}; set only privilegeProfile ({choices})"
        )
    return implied


def _parse_env(env: Any, source: str) -> dict[str, str]:
    if not isinstance(env, dict):
        raise DefaultsError(f"{source}: env must be a mapping of variable name to value")
    parsed: dict[str, str] = {}
    for name, raw in env.items():
        if not isinstance(name, str) or not name:
            raise DefaultsError(f"{source}: env names must be non-empty strings, not {name!r}")
        if name in RESERVED_ENV:
            raise DefaultsError(f"{source}: env.{name} is set by the webhook itself")
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise DefaultsError(f"{source}: env.{name} must be a string, not {raw!r}")
        parsed[name] = _checked_value(name, str(raw), source)
    return parsed


def _checked_value(name: str, value: str, source: str) -> str:
    """The text injected for `env.name`, once the watcher's own rule accepts it.

    A variable a pod may override is normalized as its annotation would be (the same check);
    any other the watcher reads is parsed as the watcher parses it at start and injected as
    written. An empty value is not injected, so it is not checked; a name the registry does
    not know (another program's variable, such as a proxy setting) is injected unchecked.
    """
    variable = watcher_env.BY_NAME.get(name)
    if variable is None or value == "":
        return value
    try:
        if variable.pod_override:
            return variable.normalize(value)
        variable.read({name: value})
    except ValueError:
        raise DefaultsError(f"{source}: env.{name}={value!r}: {variable.allowed}") from None
    return value


def load_defaults(path: Path | None) -> SidecarDefaults:
    if path is None:
        return SidecarDefaults()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DefaultsError(f"{path}: cannot read the defaults file: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise DefaultsError(f"{path}: not UTF-8 text: {error.reason}") from None
    return parse_defaults(text, str(path))
