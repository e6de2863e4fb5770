"""The watcher's environment contract (DESIGN.md), read and checked once at start: the
variables, defaults and rules are oomdump.watcher_env's; this module types them."""

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from oomdump import watcher_env

MemoryMetric = Literal["working_set", "usage"]
DETECT_MODES = watcher_env.DETECT_MODES


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


# The Config field each watcher variable fills: its name in lower case, except these.
_FIELD_OF = {"CRITICAL": "critical_percent"}
# Outside Kubernetes (no downward API) the host stands in for the pod and the node.
_HOST_NAMED = ("pod_name", "node_name")


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """The Config for `env` (default: os.environ), walking the watcher's registry
    (oomdump.watcher_env); ConfigError on the first bad value."""
    env = os.environ if env is None else env
    try:
        values = watcher_env.read(env)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    fields = {_FIELD_OF.get(name, name.lower()): value for name, value in values.items()}
    for name in _HOST_NAMED:
        fields[name] = fields[name] or socket.gethostname()
    return Config(**fields)
