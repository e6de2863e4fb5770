"""A watcher's notice (`POST /notice`), read as hostile input, and the Event it becomes.

Pure: no HTTP, no API, no clock. The body comes from a root process in a pod whose app
may control it (process name, cgroup path, profile function names), so every field is
type- and length-checked, and every text that reaches the Event is made printable: the
message is shown by `kubectl describe pod` in an operator's terminal.
"""

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook import jsonio
from webhook.logs import escape

CAPTURED = "HeapProfileCaptured"
FAILED = "HeapProfileFailed"
REASONS = (CAPTURED, FAILED)
AUDIENCE = "oomdump"  # the watcher's projected token is for this audience only
MAX_BODY_BYTES = 16 * 1024
MAX_MESSAGE = 1024  # what events.k8s.io allows; core/v1 shows the same in describe
PID_MAX = 4 * 1024 * 1024  # the kernel's PID_MAX_LIMIT
MAX_BYTES = 2**63 - 1
MAX_TOP = 16
_LENGTHS = {"pod": 253, "namespace": 63, "comm": 64, "cgroup": 4096, "location": 2048}
_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
_NOTICE_ID = re.compile(r"[0-9a-f]{32}")  # 128 random bits, as the watcher writes them


class BadNotice(ValueError):
    """The body is not a notice we accept; the message says which field and why."""


@dataclass(frozen=True)
class TopFunction:
    name: str
    flat_bytes: int
    flat_share: float


@dataclass(frozen=True)
class Notice:
    reason: str
    pod: str
    namespace: str
    pid: int
    comm: str
    cgroup: str
    usage: int
    limit: int
    percent: float | None
    location: str
    detail: str
    top: tuple[TopFunction, ...]
    # The watcher's id of this notice, the same on each retry: a repeat is answered without
    # counting again. None from watchers older than the id: each of their posts counts.
    id: str | None = None

    @property
    def event_type(self) -> str:
        return "Normal" if self.reason == CAPTURED else "Warning"

    @property
    def location_kind(self) -> str:
        if self.location.startswith("s3://"):
            return "s3"
        return "local" if self.location else "none"


def parse(body: bytes) -> Notice:
    """The notice in `body`; BadNotice naming the first field that is wrong."""
    try:
        document = jsonio.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and orjson's are ValueErrors
        raise BadNotice("the body is not JSON (UTF-8)") from None
    if not isinstance(document, dict):
        raise BadNotice("the body must be a JSON object")
    reason = _text(document, "reason", 64)
    if reason not in REASONS:
        raise BadNotice(f"reason must be one of {', '.join(REASONS)}, not {escape(reason)!r}")
    location = _text(document, "location", _LENGTHS["location"], optional=True)
    if location and not (location.startswith("s3://") or location.startswith("/")):
        raise BadNotice("location must be an s3:// URL or an absolute pod-local path")
    return Notice(
        reason=reason,
        pod=_text(document, "pod", _LENGTHS["pod"], empty=False),
        namespace=_text(document, "namespace", _LENGTHS["namespace"], empty=False),
        pid=_integer(document, "pid", 1, PID_MAX),
        comm=_text(document, "comm", _LENGTHS["comm"]),
        cgroup=_text(document, "cgroup", _LENGTHS["cgroup"], optional=True),
        usage=_integer(document, "usage", 0, MAX_BYTES),
        limit=_integer(document, "limit", 0, MAX_BYTES),
        percent=_percent(document.get("percent")),
        location=location,
        detail=_text(document, "detail", MAX_MESSAGE, optional=True),
        top=_top(document.get("top", [])),
        id=_notice_id(document.get("id")),
    )


def _text(
    document: Mapping[str, Any], key: str, limit: int, optional: bool = False, empty: bool = True
) -> str:
    value = document.get(key, "" if optional else None)
    if not isinstance(value, str):
        raise BadNotice(f"{key} must be a string, not {_kind(value)}")
    if len(value) > limit:
        raise BadNotice(f"{key} is longer than {limit} characters")
    if not value and not empty:
        raise BadNotice(f"{key} must not be empty")
    return value


def _integer(document: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = document.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadNotice(f"{key} must be an integer, not {_kind(value)}")
    if not low <= value <= high:
        raise BadNotice(f"{key} must be from {low} to {high}")
    return value


def _percent(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadNotice(f"percent must be a number or null, not {_kind(value)}")
    if not math.isfinite(value) or not 0 <= value <= 10_000:
        raise BadNotice("percent must be from 0 to 10000")
    return float(value)


def _notice_id(value: Any) -> str | None:
    if value is None:  # absent (a watcher older than the id) or null
        return None
    if not isinstance(value, str) or not _NOTICE_ID.fullmatch(value):
        shown = repr(escape(value[:40])) if isinstance(value, str) else _kind(value)
        raise BadNotice(f"id must be 32 lowercase hex digits (128 random bits), not {shown}")
    return value


def _top(value: Any) -> tuple[TopFunction, ...]:
    if not isinstance(value, list) or len(value) > MAX_TOP:
        raise BadNotice(f"top must be a list of at most {MAX_TOP} objects")
    rows = []
    for index, row in enumerate(value):
        if not isinstance(row, dict):
            raise BadNotice(f"top[{index}] must be an object, not {_kind(row)}")
        share = row.get("flat_share")
        if isinstance(share, bool) or not isinstance(share, int | float):
            raise BadNotice(f"top[{index}].flat_share must be a number")
        if not math.isfinite(share) or not 0 <= share <= 1:
            raise BadNotice(f"top[{index}].flat_share must be from 0 to 1")
        rows.append(
            TopFunction(
                _text(row, "name", 512, empty=False),
                _integer(row, "flat_bytes", 0, MAX_BYTES),
                float(share),
            )
        )
    return tuple(rows)


def _kind(value: Any) -> str:
    return "missing" if value is None else type(value).__name__


def container_of(cgroup: str, statuses: Iterable[Mapping[str, Any]]) -> str | None:
    """The name of the container whose runtime id appears in `cgroup` (the last id in the
    path wins: `/kubepods/.../pod<uid>/<id>`, `.../cri-containerd-<id>.scope`,
    `docker-<id>.scope`, `crio-<id>.scope`); None when no status matches."""
    by_id: dict[str, str] = {}
    for status in statuses:
        runtime_id = status.get("containerID") or ""
        name = status.get("name")
        if isinstance(runtime_id, str) and isinstance(name, str):
            by_id[runtime_id.rpartition("://")[2]] = name
    for found in reversed(_CONTAINER_ID.findall(cgroup.lower())):
        if found in by_id:
            return by_id[found]
    return None


def quantity(size: int) -> str:
    """Bytes as Kubernetes writes memory: `256Mi`, `1.5Gi`, `512Ki`, `100`."""
    for unit, scale in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size >= scale:
            text = f"{size / scale:.1f}".removesuffix(".0")
            return f"{text}{unit}"
    return str(size)


def _memory(notice: Notice) -> str:
    if notice.limit <= 0:
        return f"using {quantity(notice.usage)} (no limit)"
    percent = notice.percent
    if percent is None:
        percent = 100.0 * notice.usage / notice.limit
    return f"at {percent:.0f}% of {quantity(notice.limit)}"


def _process(notice: Notice, container: str | None) -> str:
    process = f"process {notice.comm or '?'} (pid {notice.pid})"
    return f"container {container}, {process}" if container else process


def message(notice: Notice, container: str | None) -> str:
    """`Heap profile of container app, process leaky (pid 7) at 92% of 256Mi saved to
    s3://b/k; top: main.retain 181Mi (94%)`, printable and at most MAX_MESSAGE long."""
    who = f"{_process(notice, container)} {_memory(notice)}"
    if notice.reason == CAPTURED:
        text = f"Heap profile of {who} saved to {notice.location or '?'}"
    else:
        text = f"Heap profile of {who} failed: {notice.detail or 'no reason given'}"
        if notice.location:
            text += f"; dump at {notice.location}"
    if notice.top:
        best = notice.top[0]
        text += f"; top: {best.name} {quantity(best.flat_bytes)} ({100 * best.flat_share:.0f}%)"
    text = escape(text)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def event_name(pod: str, uid: str, notice: Notice, container: str | None) -> str:
    """The Event's name: the same for repeated notices of one (pod uid, reason, container
    or process name, location kind), so they aggregate into one Event with a count."""
    who = f"container:{container}" if container else f"comm:{notice.comm}"
    key = "\0".join((uid, notice.reason, who, notice.location_kind))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{pod[:200].rstrip('.-')}.oomdump.{digest}"
