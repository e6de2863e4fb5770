"""Every environment variable the watcher reads, in one registry (DESIGN.md's names first).

The watcher loads its Config by walking VARIABLES (sidecar/config.py), the webhook checks
the ones a pod may override with the same rules (oomdump.contract, webhook/annotations.py),
and the README's watcher table is generated from here (`python -m oomdump.watcher_env`), so
code, checks and docs cannot disagree. A new variable is one more entry below (and the
sidecar.config.Config field it fills, named as the variable in lower case).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from oomdump import env_rules as rules

T = TypeVar("T")

COOLDOWN_BOUNDS = (1.0, 24 * 3600.0)
WATCH_TIME_BOUNDS = (0.005, 10.0)
DETECT_MODES = ("auto", "events", "adaptive", "poll")
MEMORY_METRICS = ("working_set", "usage")


@dataclass(frozen=True)
class Variable(Generic[T]):
    name: str
    default: str | None  # the text used when unset or blank; None: unset (off)
    rule: rules.Rule[T]
    meaning: str  # one line, as the README says it
    pod_override: bool = False  # an `oomdump.io/*` annotation may set it (the webhook's)
    unset: str = "unset"  # what unset means, for the README, when there is no default
    # boto3 reads its own variables (credential chain); the watcher only documents them.
    read_by: Literal["watcher", "boto3"] = "watcher"

    @property
    def allowed(self) -> str:
        return self.rule.allowed

    def normalize(self, value: str) -> str:
        """The text a pod annotation passes on to the watcher; ValueError when not allowed."""
        if self.rule.check is None:
            raise TypeError(f"{self.name} cannot be overridden by a pod")
        return self.rule.check(value)

    def read(self, env: Mapping[str, str]) -> T | None:
        """The value in `env`, or the default when unset or blank; ValueError naming the
        variable, its value and what is allowed."""
        text = env.get(self.name, "").strip() or self.default
        return None if text is None else self.rule.parse(self.name, text)

    def default_cell(self) -> str:
        if self.default is None:
            return self.unset
        return self.rule.show(self.default) if self.default else "empty"


def _int_list(normalized: str) -> tuple[int, ...]:
    return tuple(int(port) for port in normalized.split(","))


_SET_BY_WEBHOOK = "set by the webhook"
_NOTICES = "notices ([Events on the pod](#events-on-the-pod))"

VARIABLES: tuple[Variable[Any], ...] = (
    Variable(
        "CRITICAL",
        "70",
        rules.pod_rule("an integer percent from 1 to 99", rules.critical, int),
        "percent of the cgroup memory limit at which a heap is captured",
        pod_override=True,
    ),
    Variable(
        "COOLDOWN",
        "30s",
        rules.duration_rule(*COOLDOWN_BOUNDS, "30s or 5m"),
        "pause between two captures of the same process",
        pod_override=True,
    ),
    Variable(
        "WATCH_TIME",
        "100ms",
        rules.duration_rule(*WATCH_TIME_BOUNDS, "100ms"),
        "memory polling interval, and how soon a new process is watched",
        pod_override=True,
    ),
    Variable(
        "BUCKET",
        None,
        rules.pod_rule(
            "an S3 bucket name: 3-63 lowercase letters, digits, dots or hyphens,"
            " starting and ending with a letter or digit, not an IP address",
            rules.bucket,
            str,
        ),
        "S3 bucket that receives the dumps",
        pod_override=True,
        unset="unset (dumps stay in `DUMP_DIR`)",
    ),
    Variable(
        "S3_PREFIX",
        "",
        rules.pod_rule(
            f"at most {rules.PREFIX_MAX} letters, digits, `.`, `_`, `-` or `/`;"
            " no leading `/`, no empty (`//`), `.` or `..` segment",
            rules.prefix,
            str,
        ),
        "prefix of the dump object keys",
        pod_override=True,
    ),
    Variable(
        "S3_ENDPOINT_URL",
        None,
        rules.any_text("a URL, given to boto3 as it is"),
        "endpoint of an S3-compatible store (MinIO, R2, GCS interop), addressed path-style",
        unset="unset (AWS S3)",
    ),
    Variable(
        "AWS_REGION",
        None,
        rules.any_text("read by boto3"),
        "the bucket's region; it and the other `AWS_*` variables (keys, `AWS_PROFILE`,"
        " web identity / IRSA) are boto3's credential chain",
        unset="unset (boto3's own)",
        read_by="boto3",
    ),
    Variable(
        "DUMP_DIR",
        "/tmp/oomdump",
        rules.any_path("a directory path"),
        f"local spool: every dump is written here first, uploaded, then removed; {_SET_BY_WEBHOOK}",
    ),
    Variable(
        "PPROF_PATH",
        "/debug/pprof/heap",
        rules.url_path(),
        "path fetched on each port",
    ),
    Variable(
        "PPROF_PORTS",
        None,
        rules.pod_rule(
            "a comma-separated list of TCP ports from 1 to 65535", rules.ports, _int_list
        ),
        "ports to fetch `/debug/pprof/heap` from (default: each process's own)",
        pod_override=True,
        unset="unset (each process's own listening ports)",
    ),
    Variable(
        "MEMORY_METRIC",
        "working_set",
        rules.choice(*MEMORY_METRICS),
        "what is compared with the limit: `working_set` (usage minus inactive_file, what the"
        " kubelet reports) or `usage`",
    ),
    Variable(
        "POD_NAME",
        None,
        rules.any_text("any text"),
        f"the pod's name, in object keys and notices; {_SET_BY_WEBHOOK} (downward API)",
        unset="host name",
    ),
    Variable(
        "POD_NAMESPACE",
        "local",
        rules.any_text("any text"),
        f"the pod's namespace, in object keys and notices; {_SET_BY_WEBHOOK} (downward API)",
    ),
    Variable(
        "NODE_NAME",
        None,
        rules.any_text("any text"),
        f"the node's name, in each dump's metadata; {_SET_BY_WEBHOOK} (downward API)",
        unset="host name",
    ),
    Variable(
        "DETECT_MODE",
        "auto",
        rules.choice(*DETECT_MODES),
        "`events` (cgroup v1 eventfd thresholds; `WATCH_TIME` then paces only the safety-net"
        " samples of processes within 10% of their threshold or over it, the others are"
        " sampled once a second), `adaptive` (a poll that tightens near the threshold, plus"
        " cgroup v2 `memory.events`), `poll` (every `WATCH_TIME`); `auto` = events where"
        " `cgroup.event_control` is writable, adaptive on v2, poll otherwise. The mode in use"
        " is logged.",
    ),
    Variable(
        "EMERGENCY_BRAKE",
        "off",
        rules.boolean(),
        "buy time for a capture: near its limit the app is throttled (v2 `memory.high`) or"
        " frozen under a raised limit (v1) until the capture ends; see"
        " [Racing the OOM killer](#racing-the-oom-killer)",
    ),
    Variable(
        "PROC_ROOT",
        "/proc",
        rules.any_path("a directory path"),
        "where processes are read (tests point it at prepared trees)",
    ),
    Variable(
        "METRICS_PORT",
        None,
        rules.integer(1, 65535),
        "serve Prometheus `/metrics` on this port",
        unset="unset (off)",
    ),
    Variable(
        "FETCH_TIMEOUT",
        "5s",
        rules.duration_at_least(0.01),
        "whole-request deadline of one pprof fetch",
    ),
    Variable(
        "PPROF_MAX_BYTES",
        str(64 * 2**20),
        rules.byte_count(1024, 2**40),
        "larger answers are dropped as `too-large`",
    ),
    Variable(
        "SPOOL_MAX_FILES",
        "200",
        rules.integer(1, 1_000_000),
        "when the spool holds this many dumps, new ones are refused (`dump-refused"
        ' reason=spool-full` log line, `oomdump_capture_failures_total{reason="spool-full"}`);'
        " nothing already spooled is deleted",
    ),
    Variable(
        "SPOOL_MAX_BYTES",
        str(512 * 2**20),
        rules.byte_count(1024, 2**50),
        "the same, when the spool holds this many bytes",
    ),
    Variable(
        "SHUTDOWN_GRACE",
        "10s",
        rules.duration_at_least(0.0),
        "time given to in-flight uploads after SIGTERM",
    ),
    Variable(
        "REFRESH_INTERVAL",
        "2s",
        rules.duration_at_least(0.1),
        "how often every process's stat, cgroup and limit are read again; a new PID, an exit"
        " or a young process moved to another cgroup starts that at once (the cheap look of"
        " every `WATCH_TIME` sees them)",
    ),
    Variable(
        "UPLOAD_BACKOFF_MIN",
        "1s",
        rules.duration_at_least(0.01),
        "first retry delay of one dump's upload, doubling at each retry (one refused dump"
        " waits alone)",
    ),
    Variable(
        "UPLOAD_BACKOFF_MAX",
        "60s",
        rules.duration_at_least(0.01),
        "longest retry delay of one dump's upload; not below `UPLOAD_BACKOFF_MIN`",
    ),
    Variable(
        "NOTIFY_URL",
        None,
        rules.https_url(),
        f"where the watcher sends its {_NOTICES}; {_SET_BY_WEBHOOK}",
        unset="unset (no notices)",
    ),
    Variable(
        "NOTIFY_TOKEN_FILE",
        "/var/run/secrets/oomdump/token",
        rules.any_path("a file path"),
        f"the pod's projected token, which authenticates the notices; {_SET_BY_WEBHOOK}",
    ),
    Variable(
        "NOTIFY_CA",
        None,
        rules.any_text("PEM certificates"),
        f"the CA bundle the notice target's certificate must chain to; {_SET_BY_WEBHOOK}",
        unset="unset (the system's CAs)",
    ),
)

BY_NAME: Mapping[str, Variable[Any]] = {variable.name: variable for variable in VARIABLES}


def read(env: Mapping[str, str]) -> dict[str, Any]:
    """Each variable the watcher itself reads, by name, walking VARIABLES in order, then the
    rules between variables; ValueError (naming the variable and what is allowed) on the
    first bad one."""
    values = {
        variable.name: variable.read(env) for variable in VARIABLES if variable.read_by == "watcher"
    }
    _check_together(env, values)
    return values


def _check_together(env: Mapping[str, str], values: Mapping[str, Any]) -> None:
    """Rules no single variable can check: one dump's retry delays grow from the minimum to
    the maximum, so the maximum may not be below the minimum."""
    low, high = values["UPLOAD_BACKOFF_MIN"], values["UPLOAD_BACKOFF_MAX"]
    if high < low:
        raise ValueError(
            f"UPLOAD_BACKOFF_MAX={env.get('UPLOAD_BACKOFF_MAX', '').strip()!r} is below "
            f"UPLOAD_BACKOFF_MIN ({low:g}s); allowed: a Go-style duration >= it"
        )


def markdown_table() -> str:
    """The README's watcher table (between its `watcher-env` markers)."""
    rows = ["| variable | default | allowed | per pod | meaning |", "|---|---|---|---|---|"]
    for variable in VARIABLES:
        per_pod = "[yes](#opt-in-opt-out-override-per-pod)" if variable.pod_override else "—"
        rows.append(
            f"| `{variable.name}` | {variable.default_cell()} | {variable.allowed} | {per_pod}"
            f" | {variable.meaning} |"
        )
    return "\n".join(rows) + "\n"
