"""What a watcher variable may hold, and how its text becomes the watcher's value.

A Rule pairs the words users read (`allowed`, in refusals and the README) with the parser
that enforces them, so the two are built from the same bounds and cannot disagree. A
parser takes the variable's name and its text (already stripped) and returns the typed
value, or raises ValueError whose message names the variable, the value and `allowed`.

The rules a pod may override through an annotation also have `check`: the text the webhook
validates and passes on (normalized), before the watcher converts it.
"""

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from oomdump.durations import format_duration, parse_duration

T = TypeVar("T")

PREFIX_MAX = 512
_PERCENT = re.compile(r"[0-9]{1,2}")
_PORT = re.compile(r"[0-9]{1,5}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Characters S3 documents as safe in keys, which also mean nothing to a shell, a URL or
# the kubelet's `$(VAR)` expansion; `/` separates segments.
_PREFIX_CHARS = re.compile(r"[A-Za-z0-9._/-]*")
_TRUE = ("1", "true", "on", "yes")
_FALSE = ("0", "false", "off", "no")


def _literal(text: str) -> str:
    return f"`{text}`"


@dataclass(frozen=True)
class Rule(Generic[T]):
    allowed: str  # what a user may write, as refusals and the README say it
    parse: Callable[[str, str], T]  # (name, stripped text) -> value; ValueError naming both
    check: Callable[[str], str] | None = None  # pod rules: text -> normalized text
    show: Callable[[str], str] = field(default=_literal)  # a value as the README shows it


# The checks of the variables a pod may override; each returns the normalized text.


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


def pod_rule(allowed: str, check: Callable[[str], str], convert: Callable[[str], T]) -> Rule[T]:
    """A rule a pod annotation may override: the webhook runs `check`, the watcher too."""

    def parse(name: str, text: str) -> T:
        try:
            return convert(check(text))
        except ValueError:
            raise ValueError(f"{name}={text!r} is not allowed; allowed: {allowed}") from None

    return Rule(allowed, parse, check)


def duration_rule(low: float, high: float, example: str) -> Rule[float]:
    allowed = (
        f"a Go duration from {format_duration(low)} to {format_duration(high)}, e.g. {example}"
    )
    return pod_rule(allowed, duration_between(low, high), parse_duration)


# The rules of the variables only the watcher's own environment sets.


_BINARY_UNITS = (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def _size(count: int) -> str:
    for unit, scale in _BINARY_UNITS:
        if count >= scale and count % scale == 0:
            return f"{count // scale} {unit}"
    return f"{count} bytes"


def _integer(low: int, high: int, allowed: str, show: Callable[[str], str]) -> Rule[int]:
    def parse(name: str, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{name}={text!r} is not an integer; allowed: {allowed}") from None
        if not low <= value <= high:
            raise ValueError(f"{name}={value} is out of range; allowed: {allowed}")
        return value

    return Rule(allowed, parse, show=show)


def integer(low: int, high: int) -> Rule[int]:
    return _integer(low, high, f"{low}-{high}", _literal)


def byte_count(low: int, high: int) -> Rule[int]:
    """An integer of bytes; the README also shows it in binary units (`64 MiB`)."""
    allowed = f"{low}-{high} bytes ({_size(low)} to {_size(high)})"
    return _integer(low, high, allowed, lambda text: f"`{text}` ({_size(int(text))})")


def duration_at_least(minimum: float) -> Rule[float]:
    allowed = f"a Go-style duration >= {minimum * 1000:g}ms"

    def parse(name: str, text: str) -> float:
        try:
            value = parse_duration(text)
        except ValueError as error:
            raise ValueError(f"{name}: {error}; allowed: {allowed}") from None
        if value < minimum:
            raise ValueError(f"{name}={text!r} is too short; allowed: {allowed}")
        return value

    return Rule(allowed, parse)


def choice(*options: str) -> Rule[str]:
    allowed = ", ".join(options)

    def parse(name: str, text: str) -> str:
        if text not in options:
            raise ValueError(f"{name}={text!r} is not allowed; allowed: {allowed}")
        return text

    return Rule(allowed, parse)


def boolean() -> Rule[bool]:
    allowed = "true/false, on/off, 1/0"

    def parse(name: str, text: str) -> bool:
        value = text.lower()
        if value in _FALSE:
            return False
        if value in _TRUE:
            return True
        raise ValueError(f"{name}={value!r} is not a boolean; allowed: {allowed}")

    return Rule(allowed, parse)


def https_url() -> Rule[str]:
    allowed = "an https:// URL, or unset"

    def parse(name: str, text: str) -> str:
        if not (text.startswith("https://") and len(text) > len("https://")):
            raise ValueError(f"{name}={text!r} is not allowed; allowed: {allowed}")
        return text

    return Rule(allowed, parse)


def url_path() -> Rule[str]:
    def parse(name: str, text: str) -> str:
        if not text.startswith("/"):
            raise ValueError(f"{name}={text!r} must start with '/'")
        return text

    return Rule("a URL path starting with `/`", parse)


def any_text(allowed: str) -> Rule[str]:
    """Any text: what it means is checked where it is used (a host name, a URL, a PEM)."""
    return Rule(allowed, lambda _name, value: value)


def any_path(allowed: str) -> Rule[Path]:
    return Rule(allowed, lambda _name, value: Path(value))
