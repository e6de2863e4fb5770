"""Bytes and shares as a person reads them (Kubernetes-style binary units)."""

_UNITS = ("Ki", "Mi", "Gi", "Ti", "Pi")


def size(value: int | float | None) -> str:
    """`512B`, `1.5Ki`, `181Mi`: three significant figures at most, sign kept."""
    if value is None:
        return "-"
    amount = float(value)
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount < 1024:
        return f"{sign}{int(amount)}B"
    index = 0
    amount /= 1024
    while amount >= 1024 and index < len(_UNITS) - 1:
        amount /= 1024
        index += 1
    unit = _UNITS[index]
    text = f"{amount:.0f}" if amount >= 100 else f"{amount:.1f}".removesuffix(".0")
    return f"{sign}{text}{unit}"


def share(value: float | None) -> str:
    """A fraction as a percentage with two decimals, as `go tool pprof -top` prints it."""
    return "-" if value is None else f"{100 * value:.2f}%"
