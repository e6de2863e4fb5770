"""The watcher variables a pod may override (DESIGN.md), in one place: their defaults, what
is allowed and the check of it. The webhook validates annotations and the defaults file
with these checks, the watcher its environment, and the README tables come from here, so
the two halves of oomdump cannot disagree about a value.

Each check returns the normalized value (as the watcher receives it) or raises ValueError.
"""

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from oomdump.durations import format_duration, parse_duration

COOLDOWN_BOUNDS = (1.0, 24 * 3600.0)
WATCH_TIME_BOUNDS = (0.005, 10.0)
PREFIX_MAX = 512

_PERCENT = re.compile(r"[0-9]{1,2}")
_PORT = re.compile(r"[0-9]{1,5}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Characters S3 documents as safe in keys, which also mean nothing to a shell, a URL or
# the kubelet's `$(VAR)` expansion; `/` separates segments.
_PREFIX_CHARS = re.compile(r"[A-Za-z0-9._/-]*")


def critical(value: str) -> str:
    if not _PERCENT.fullmatch(value) or not 1 <= int(value) <= 99:
        raise ValueError(value)
    return str(int(value))


def duration_between(low: float, high: float) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value != value.strip():
            raise ValueError(value)
        seconds = parse_duration(value)
        # Compare in whole nanoseconds so float noise cannot refuse `5ms` or `24h`.
        if not round(low * 1e9) <= round(seconds * 1e9) <= round(high * 1e9):
            raise ValueError(value)
        return value

    return check


def ports(value: str) -> str:
    seen: list[int] = []
    for part in value.split(","):
        text = part.strip()
        if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
            raise ValueError(value)
        if int(text) not in seen:
            seen.append(int(text))
    return ",".join(str(port) for port in seen)


def bucket(value: str) -> str:
    if not _BUCKET.fullmatch(value) or ".." in value or ".-" in value or "-." in value:
        raise ValueError(value)
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return value
    raise ValueError(value)


def prefix(value: str) -> str:
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


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None  # None: unset unless given
    allowed: str  # what a user may write, as refusals and the README say it
    meaning: str
    check: Callable[[str], str]

    def normalize(self, value: str) -> str:
        """The value as the watcher receives it; ValueError when not allowed."""
        return self.check(value)


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "CRITICAL",
        "70",
        "an integer percent from 1 to 99",
        "percent of the cgroup memory limit at which a heap is captured",
        critical,
    ),
    Variable(
        "COOLDOWN",
        "30s",
        f"a Go duration from {format_duration(COOLDOWN_BOUNDS[0])}"
        f" to {format_duration(COOLDOWN_BOUNDS[1])}, e.g. 30s or 5m",
        "pause between two captures of the same process",
        duration_between(*COOLDOWN_BOUNDS),
    ),
    Variable(
        "WATCH_TIME",
        "100ms",
        f"a Go duration from {format_duration(WATCH_TIME_BOUNDS[0])}"
        f" to {format_duration(WATCH_TIME_BOUNDS[1])}, e.g. 100ms",
        "memory polling interval, and how soon a new process is watched",
        duration_between(*WATCH_TIME_BOUNDS),
    ),
    Variable(
        "PPROF_PORTS",
        None,
        "a comma-separated list of TCP ports from 1 to 65535",
        "ports to fetch `/debug/pprof/heap` from (default: each process's own)",
        ports,
    ),
    Variable(
        "BUCKET",
        None,
        "an S3 bucket name: 3-63 lowercase letters, digits, dots or hyphens,"
        " starting and ending with a letter or digit, not an IP address",
        "S3 bucket that receives the dumps",
        bucket,
    ),
    Variable(
        "S3_PREFIX",
        "",
        f"at most {PREFIX_MAX} letters, digits, `.`, `_`, `-` or `/`; no leading `/`,"
        " no empty (`//`), `.` or `..` segment",
        "prefix of the dump object keys",
        prefix,
    ),
)

BY_NAME: Mapping[str, Variable] = {variable.name: variable for variable in VARIABLES}
