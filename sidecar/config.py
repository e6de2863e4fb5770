"""The watcher's environment contract (DESIGN.md), read and checked once at start."""

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from oomdump import contract
from oomdump.durations import parse_duration

MemoryMetric = Literal["working_set", "usage"]
DETECT_MODES = ("auto", "events", "adaptive", "poll")


class ConfigError(ValueError):
    """A variable has a value the watcher cannot use; the message names it and what is allowed."""


@dataclass(frozen=True)
class Config:
    critical_percent: int
    cooldown: float
    watch_time: float
    bucket: str | None
    s3_prefix: str
    s3_endpoint_url: str | None
    dump_dir: Path
    pprof_path: str
    pprof_ports: tuple[int, ...] | None
    memory_metric: MemoryMetric
    pod_name: str
    pod_namespace: str
    node_name: str
    proc_root: Path
    metrics_port: int | None
    detect_mode: str
    emergency_brake: bool
    # When the spool holds this many dumps or bytes, new captures are refused (logged, counted
    # as failure reason `spool-full`); nothing already spooled is deleted.
    spool_max_files: int
    spool_max_bytes: int
    fetch_timeout: float  # whole-request deadline for one pprof fetch
    pprof_max_bytes: int  # larger answers are dropped as `too-large`
    shutdown_grace: float  # time given to in-flight uploads after SIGTERM
    # How often /proc is scanned for new processes, ports and limits (an exit is noticed at
    # once); the costliest part of idle watching, so slower than WATCH_TIME.
    refresh_interval: float
    # Retry delays of one dump's upload: doubling from the first, never past the second.
    upload_backoff_min: float
    upload_backoff_max: float
    # Events on the pod: notices to the webhook (unset = none), authenticated by the pod's
    # projected token, over TLS trusting this CA (PEM); set by the injector.
    notify_url: str | None
    notify_token_file: Path
    notify_ca: str | None


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; allowed: {low}-{high}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range; allowed: {low}-{high}")
    return value


def _duration(env: Mapping[str, str], name: str, default: str, minimum: float) -> float:
    raw = env.get(name, "").strip() or default
    try:
        value = parse_duration(raw)
    except ValueError as error:
        raise ConfigError(f"{name}: {error}") from None
    if value < minimum:
        raise ConfigError(
            f"{name}={raw!r} is too short; allowed: a Go-style duration >= {minimum * 1000:g}ms"
        )
    return value


def _pod_variable(env: Mapping[str, str], name: str) -> str:
    """A variable a pod may override, checked as the webhook checks it (oomdump.contract);
    '' when unset and without a default."""
    variable = contract.BY_NAME[name]
    raw = env.get(name, "").strip()
    if not raw:
        return variable.default or ""
    try:
        return variable.normalize(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not allowed; allowed: {variable.allowed}") from None


def _ports(normalized: str) -> tuple[int, ...] | None:
    return tuple(int(port) for port in normalized.split(",")) if normalized else None


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; allowed: {', '.join(allowed)}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "off", "no"):
        return False
    if value in ("1", "true", "on", "yes"):
        return True
    raise ConfigError(f"{name}={value!r} is not a boolean; allowed: true/false, on/off, 1/0")


def _https_url(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    if value and not (value.startswith("https://") and len(value) > len("https://")):
        raise ConfigError(f"{name}={value!r} is not allowed; allowed: an https:// URL, or unset")
    return value or None


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """The Config for `env` (default: os.environ); ConfigError on the first bad value."""
    env = os.environ if env is None else env
    host = socket.gethostname()
    metrics_port = _int(env, "METRICS_PORT", 0, 1, 65535) if env.get("METRICS_PORT") else None
    backoff_min = _duration(env, "UPLOAD_BACKOFF_MIN", "1s", 0.01)
    backoff_max = _duration(env, "UPLOAD_BACKOFF_MAX", "60s", 0.01)
    if backoff_max < backoff_min:
        raise ConfigError(
            f"UPLOAD_BACKOFF_MAX={env.get('UPLOAD_BACKOFF_MAX', '').strip()!r} is below "
            f"UPLOAD_BACKOFF_MIN ({backoff_min:g}s); allowed: a Go-style duration >= it"
        )
    pprof_path = env.get("PPROF_PATH", "").strip() or "/debug/pprof/heap"
    if not pprof_path.startswith("/"):
        raise ConfigError(f"PPROF_PATH={pprof_path!r} must start with '/'")
    return Config(
        critical_percent=int(_pod_variable(env, "CRITICAL")),
        cooldown=parse_duration(_pod_variable(env, "COOLDOWN")),
        watch_time=parse_duration(_pod_variable(env, "WATCH_TIME")),
        bucket=_pod_variable(env, "BUCKET") or None,
        s3_prefix=_pod_variable(env, "S3_PREFIX"),
        s3_endpoint_url=env.get("S3_ENDPOINT_URL", "").strip() or None,
        dump_dir=Path(env.get("DUMP_DIR", "").strip() or "/tmp/oomdump"),
        pprof_path=pprof_path,
        pprof_ports=_ports(_pod_variable(env, "PPROF_PORTS")),
        memory_metric=_choice(env, "MEMORY_METRIC", "working_set", ("working_set", "usage")),  # type: ignore[arg-type]
        pod_name=env.get("POD_NAME", "").strip() or host,
        pod_namespace=env.get("POD_NAMESPACE", "").strip() or "local",
        node_name=env.get("NODE_NAME", "").strip() or host,
        proc_root=Path(env.get("PROC_ROOT", "").strip() or "/proc"),
        metrics_port=metrics_port,
        detect_mode=_choice(env, "DETECT_MODE", "auto", DETECT_MODES),
        emergency_brake=_bool(env, "EMERGENCY_BRAKE"),
        spool_max_files=_int(env, "SPOOL_MAX_FILES", 200, 1, 1_000_000),
        spool_max_bytes=_int(env, "SPOOL_MAX_BYTES", 512 * 1024 * 1024, 1024, 2**50),
        fetch_timeout=_duration(env, "FETCH_TIMEOUT", "5s", 0.01),
        pprof_max_bytes=_int(env, "PPROF_MAX_BYTES", 64 * 1024 * 1024, 1024, 2**40),
        shutdown_grace=_duration(env, "SHUTDOWN_GRACE", "10s", 0.0),
        refresh_interval=_duration(env, "REFRESH_INTERVAL", "2s", 0.1),
        upload_backoff_min=backoff_min,
        upload_backoff_max=backoff_max,
        notify_url=_https_url(env, "NOTIFY_URL"),
        notify_token_file=Path(
            env.get("NOTIFY_TOKEN_FILE", "").strip() or "/var/run/secrets/oomdump/token"
        ),
        notify_ca=env.get("NOTIFY_CA", "").strip() or None,
    )
