"""Go-style durations (`500ms`, `10s`, `1m30s`), as `time.ParseDuration` reads them."""

import re

_UNIT_SECONDS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# ASCII digits only, as Go reads them (`\d` would also take other scripts' digits).
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
# Go's Duration is an int64 of nanoseconds; longer texts are refused there, and here too
# (such a wait would also overflow Python's timeouts, threading.TIMEOUT_MAX).
MAX_SECONDS = (2**63 - 1) / 1e9


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration; ValueError naming the text when it is not one.

    Like Go, a bare number is refused except `0`, and parts may be combined (`1m30s`).
    Negative durations are refused: nothing in oomdump waits a negative time.
    """
    value = text.strip()
    if value == "0":
        return 0.0
    if not value:
        raise ValueError("empty duration; use a Go-style duration such as 500ms, 10s or 2m")
    position = 0
    total = 0.0
    while position < len(value):
        match = _PART.match(value, position)
        if match is None:
            raise ValueError(f"{text!r} is not a Go-style duration (e.g. 500ms, 10s, 2m, 1m30s)")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if total > MAX_SECONDS:
        raise ValueError(f"{text!r} is longer than the longest Go duration (about 292 years)")
    return total


def format_duration(seconds: float) -> str:
    """The shortest Go-style spelling of a duration in whole milliseconds (`1m30s`, `250ms`)."""
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    if millis % 1000:
        return f"{millis}ms" if millis < 1000 else f"{millis / 1000:g}s"
    whole = millis // 1000
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts)
