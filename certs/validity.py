"""Certificate lifetimes: how long to issue for, and when to renew."""

from datetime import datetime, timedelta

from oomdump.durations import parse_duration

RENEW_FRACTION = 1 / 3


def parse_validity(text: str) -> timedelta:
    """A lifetime written as days (`365`, `365d`) or a Go-style duration (`720h`, `90m`).

    ValueError names the text when it is not one, or when it is not positive.
    """
    value = text.strip()
    try:
        if value.endswith("d") and value[:-1].isdigit():
            seconds = int(value[:-1]) * 86400.0
        elif value.isdigit():
            seconds = int(value) * 86400.0
        else:
            seconds = parse_duration(value)
    except ValueError:
        raise ValueError(
            f"validity {text!r} is neither a number of days (365, 365d) "
            "nor a Go-style duration (720h, 90m)"
        ) from None
    if seconds <= 0:
        raise ValueError(f"validity {text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def needs_renewal(not_before: datetime, not_after: datetime, now: datetime) -> bool:
    """True once less than a third of the certificate's lifetime is left (or it is expired,
    or not yet valid, which means a clock jumped or the material is foreign)."""
    lifetime = not_after - not_before
    if now < not_before:
        return True
    return not_after - now < lifetime * RENEW_FRACTION
