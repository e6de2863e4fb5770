"""Prometheus counters, gauges and a histogram, and their text exposition format 0.0.4,
written line for line as prometheus_client writes them (the same names, HELP, TYPE, labels
and `_created` series): prometheus_client alone would add some 12 MiB to the resident
memory of a watcher that mostly waits (issue 11). Thread-safe: the watcher's threads update
while a scrape reads.

A label value is escaped as the format says (backslash, double quote, newline), and a scrape
never fails on one (a lone surrogate is written as '?'); `bounded_label` makes a value the
app chose (a function name from its profile) short and free of control characters first.
"""

import math
import re
import threading
import time
from collections.abc import Iterator
from typing import Self, TypeVar

Sample = tuple[str, dict[str, str], float]


class _Value:
    """A float behind a lock (`_value.get()` is the name prometheus_client uses too, and
    what tests read)."""

    def __init__(self) -> None:
        self._number = 0.0
        self._lock = threading.Lock()

    def inc(self, amount: float) -> None:
        with self._lock:
            self._number += amount

    def set(self, number: float) -> None:
        with self._lock:
            self._number = float(number)

    def get(self) -> float:
        with self._lock:
            return self._number


class _Metric:
    """One metric family: without label names it holds its own value, with them `labels()`
    gives (and creates on first use) the child for one set of label values."""

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self._labelnames = labelnames
        self._children: dict[tuple[str, ...], Self] = {}
        self._lock = threading.Lock()
        self._created = time.time()
        self._value = _Value()

    def labels(self, *values: object) -> Self:
        if len(values) != len(self._labelnames) or not values:
            raise ValueError(f"{self.name} takes labels {self._labelnames}, not {values!r}")
        key = tuple(str(value) for value in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._child()
            return child

    def remove(self, *values: object) -> None:
        """Drop the child for these label values (none there: nothing to do)."""
        key = tuple(str(value) for value in values)
        with self._lock:
            self._children.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._children.clear()

    def _child(self) -> Self:
        return type(self)(self.name, self.documentation)

    def _members(self) -> list[tuple[dict[str, str], Self]]:
        if not self._labelnames:
            return [({}, self)]
        with self._lock:
            children = list(self._children.items())
        return [(dict(zip(self._labelnames, key, strict=True)), child) for key, child in children]

    def families(self) -> list[tuple[str, str, list[Sample]]]:
        """(name, type, samples) as the text format lists them."""
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames)

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self._value.inc(amount)

    def families(self) -> list[tuple[str, str, list[Sample]]]:
        members = self._members()
        totals = [(f"{self.name}_total", labels, m._value.get()) for labels, m in members]
        created = [(f"{self.name}_created", labels, m._created) for labels, m in members]
        out = [(f"{self.name}_total", "counter", totals)]
        return out + ([(f"{self.name}_created", "gauge", created)] if created else [])


class Gauge(_Metric):
    kind = "gauge"

    def set(self, number: float) -> None:
        self._value.set(number)

    def inc(self, amount: float = 1) -> None:
        self._value.inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._value.inc(-amount)

    def families(self) -> list[tuple[str, str, list[Sample]]]:
        samples = [(self.name, labels, m._value.get()) for labels, m in self._members()]
        return [(self.name, "gauge", samples)]


class Histogram(_Metric):
    """Without labels (the watcher needs none)."""

    kind = "histogram"

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        super().__init__(name, documentation)
        self._bounds = (*(float(b) for b in buckets), math.inf)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        last = len(self._bounds) - 1  # +Inf, where NaN goes too
        index = next((i for i, bound in enumerate(self._bounds) if amount <= bound), last)
        with self._lock:
            self._counts[index] += 1
            self._sum += amount

    def families(self) -> list[tuple[str, str, list[Sample]]]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        samples: list[Sample] = []
        running = 0
        for bound, count in zip(self._bounds, counts, strict=True):
            running += count
            samples.append((f"{self.name}_bucket", {"le": _number(bound)}, float(running)))
        samples.append((f"{self.name}_count", {}, float(running)))
        samples.append((f"{self.name}_sum", {}, total))
        created = [(f"{self.name}_created", {}, self._created)]
        return [(self.name, "histogram", samples), (f"{self.name}_created", "gauge", created)]


M = TypeVar("M", bound=_Metric)


class Registry:
    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def register(self, metric: M) -> M:
        self._metrics.append(metric)
        return metric

    def samples(self) -> Iterator[Sample]:
        for metric in self._metrics:
            for _, _, samples in metric.families():
                yield from samples

    def get_sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The value of one sample, as prometheus_client's registry answers it (None: none)."""
        wanted = labels or {}
        return next((v for n, got, v in self.samples() if n == name and got == wanted), None)

    def render(self) -> bytes:
        """The text exposition format 0.0.4, line for line as prometheus_client writes it."""
        lines: list[str] = []
        for metric in self._metrics:
            for name, kind, samples in metric.families():
                lines.append(f"# HELP {name} {_escape_help(metric.documentation)}")
                lines.append(f"# TYPE {name} {kind}")
                lines += [f"{n}{_labels(labels)} {_number(v)}" for n, labels, v in samples]
        return ("\n".join(lines) + "\n").encode("utf-8", "replace")


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: escaped or not,
# they have no place in a label a person reads (a carriage return rewrites a terminal line).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CUT = "\u2026"  # "…", 3 bytes of UTF-8


def bounded_label(value: str, max_bytes: int) -> str:
    """`value` as a label value whatever its source: each control character becomes U+FFFD,
    a lone surrogate '?', and a value over `max_bytes` bytes of UTF-8 is cut at a character
    boundary and ends with '…' (the whole at most `max_bytes`). The work is bounded by
    `max_bytes`, not by the value's length."""
    if max_bytes < len(_CUT.encode()):
        raise ValueError(f"max_bytes must be at least {len(_CUT.encode())}, not {max_bytes}")
    head = value[: max_bytes + 1]  # every character is at least one byte
    encoded = _CONTROL.sub("\ufffd", head).encode("utf-8", "replace")
    if len(encoded) <= max_bytes and len(value) == len(head):
        return encoded.decode()
    room = max_bytes - len(_CUT.encode())
    return encoded[:room].decode("utf-8", "ignore") + _CUT


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    escaped = (f'{name}="{_escape_label(value)}"' for name, value in labels.items())
    return "{" + ",".join(escaped) + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    """A float as Go (and so prometheus_client) writes it: +Inf, NaN, 1.0, 1.2345e+08."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text
