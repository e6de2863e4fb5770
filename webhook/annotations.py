"""The one registry of `oomdump.io/*` pod annotations: validation and the README table.

Each entry names the annotation, the watcher environment variable it overrides (if any),
what values are allowed and a validator that returns the value the watcher gets.
"""

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from oomdump.durations import format_duration, parse_duration

PREFIX = "oomdump.io/"
INJECT = PREFIX + "inject"
STATUS = PREFIX + "status"


class InvalidAnnotation(ValueError):
    """An annotation value outside what the registry allows; the message is user-facing."""

    def __init__(self, key: str, value: str, allowed: str) -> None:
        shown = value if len(value) <= 40 else value[:37] + "..."
        super().__init__(f"annotation {key}={shown!r} is invalid: {allowed}")
        self.key = key
        self.value = value
        self.allowed = allowed


@dataclass(frozen=True)
class Annotation:
    key: str
    env: str | None  # watcher variable it overrides; None for control annotations
    allowed: str  # what a user may write, as the refusal message and README say it
    meaning: str
    example: str
    normalize: Callable[[str], str]  # raises ValueError when the value is not allowed

    def validate(self, value: str) -> str:
        try:
            return self.normalize(value)
        except ValueError:
            raise InvalidAnnotation(self.key, value, self.allowed) from None


_PERCENT = re.compile(r"[0-9]{1,2}")
_PORT = re.compile(r"[0-9]{1,5}")


def _critical(value: str) -> str:
    if not _PERCENT.fullmatch(value) or not 1 <= int(value) <= 99:
        raise ValueError(value)
    return str(int(value))


def _duration_between(low: float, high: float) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value != value.strip():
            raise ValueError(value)
        seconds = parse_duration(value)
        # Compare in whole nanoseconds so float noise cannot refuse `5ms` or `24h`.
        if not round(low * 1e9) <= round(seconds * 1e9) <= round(high * 1e9):
            raise ValueError(value)
        return value

    return check


def _ports(value: str) -> str:
    ports: list[int] = []
    for part in value.split(","):
        text = part.strip()
        if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
            raise ValueError(value)
        if int(text) not in ports:
            ports.append(int(text))
    return ",".join(str(port) for port in ports)


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _bucket(value: str) -> str:
    if not _BUCKET.fullmatch(value) or ".." in value or ".-" in value or "-." in value:
        raise ValueError(value)
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return value
    raise ValueError(value)


# Characters S3 documents as safe in keys, which also mean nothing to a shell, a URL or
# the kubelet's `$(VAR)` expansion; `/` separates segments.
_PREFIX_CHARS = re.compile(r"[A-Za-z0-9._/-]*")
PREFIX_MAX = 512


def _prefix(value: str) -> str:
    """A key prefix that stays below DUMP_DIR and inside its own part of a shared bucket.

    The watcher writes each dump to DUMP_DIR/{prefix}... before uploading it, so a `..`
    segment or a leading `/` would leave the spool (and its limits), and in S3 `a//b` or
    `./` are keys apart from `a/b` that look the same in a listing.
    """
    if len(value) > PREFIX_MAX or not _PREFIX_CHARS.fullmatch(value):
        raise ValueError(value)
    if value == "":
        return value  # no prefix: keys start with the namespace
    segments = value.split("/")
    # The last segment is empty when the prefix ends with `/` (the usual `prod/`).
    for segment in segments[:-1] if value.endswith("/") else segments:
        if segment in ("", ".", ".."):
            raise ValueError(value)
    return value


def _inject(value: str) -> str:
    if value not in ("enabled", "disabled"):
        raise ValueError(value)
    return value


COOLDOWN_BOUNDS = (1.0, 24 * 3600.0)
WATCH_TIME_BOUNDS = (0.005, 10.0)

REGISTRY: tuple[Annotation, ...] = (
    Annotation(
        key=INJECT,
        env=None,
        allowed="enabled or disabled",
        meaning="`disabled` (as annotation or label) leaves the pod alone",
        example="disabled",
        normalize=_inject,
    ),
    Annotation(
        key=PREFIX + "critical",
        env="CRITICAL",
        allowed="an integer percent from 1 to 99",
        meaning="percent of the cgroup memory limit at which a heap is captured",
        example="85",
        normalize=_critical,
    ),
    Annotation(
        key=PREFIX + "cooldown",
        env="COOLDOWN",
        allowed=(
            f"a Go duration from {format_duration(COOLDOWN_BOUNDS[0])}"
            f" to {format_duration(COOLDOWN_BOUNDS[1])}, e.g. 30s or 5m"
        ),
        meaning="pause between two captures of the same process",
        example="2m",
        normalize=_duration_between(*COOLDOWN_BOUNDS),
    ),
    Annotation(
        key=PREFIX + "watch-time",
        env="WATCH_TIME",
        allowed=(
            f"a Go duration from {format_duration(WATCH_TIME_BOUNDS[0])}"
            f" to {format_duration(WATCH_TIME_BOUNDS[1])}, e.g. 100ms"
        ),
        meaning="memory polling interval",
        example="50ms",
        normalize=_duration_between(*WATCH_TIME_BOUNDS),
    ),
    Annotation(
        key=PREFIX + "ports",
        env="PPROF_PORTS",
        allowed="a comma-separated list of TCP ports from 1 to 65535",
        meaning="ports to fetch `/debug/pprof/heap` from (default: each process's own)",
        example="6060,8080",
        normalize=_ports,
    ),
    Annotation(
        key=PREFIX + "bucket",
        env="BUCKET",
        allowed=(
            "an S3 bucket name: 3-63 lowercase letters, digits, dots or hyphens,"
            " starting and ending with a letter or digit, not an IP address"
        ),
        meaning="S3 bucket that receives the dumps",
        example="team-heap-dumps",
        normalize=_bucket,
    ),
    Annotation(
        key=PREFIX + "prefix",
        env="S3_PREFIX",
        allowed=(
            f"at most {PREFIX_MAX} letters, digits, `.`, `_`, `-` or `/`; no leading `/`,"
            " no empty (`//`), `.` or `..` segment"
        ),
        meaning="prefix of the dump object keys",
        example="prod/",
        normalize=_prefix,
    ),
)

BY_KEY: Mapping[str, Annotation] = {entry.key: entry for entry in REGISTRY}
BY_ENV: Mapping[str, Annotation] = {entry.env: entry for entry in REGISTRY if entry.env}


def env_overrides(annotations: Mapping[str, str]) -> dict[str, str]:
    """Watcher variables set by the pod's annotations; InvalidAnnotation on the first bad one.

    Unknown `oomdump.io/*` keys are ignored (the status annotation is one of them).
    """
    overrides: dict[str, str] = {}
    for entry in REGISTRY:
        if entry.key in annotations:
            value = entry.validate(annotations[entry.key])
            if entry.env:
                overrides[entry.env] = value
    return overrides


def markdown_table() -> str:
    """The README's annotation table, generated so that docs and validation cannot drift."""
    rows = [
        "| annotation | sets | allowed values | meaning | example |",
        "|---|---|---|---|---|",
    ]
    for entry in REGISTRY:
        sets = f"`{entry.env}`" if entry.env else "—"
        rows.append(
            f"| `{entry.key}` | {sets} | {entry.allowed} | {entry.meaning} | `{entry.example}` |"
        )
    return "\n".join(rows) + "\n"
