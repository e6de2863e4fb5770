"""Dumps as records: what a key says (DESIGN.md's layout), merged with its `.json` metadata.

Key: `{S3_PREFIX}{namespace}/{pod}/{YYYY-MM-DDTHH-MM-SS.mmmZ}-{comm}-{pid}-{port}.pb.gz`, with
the metadata at the same name ending `.json`. The prefix may hold slashes, so a key is read
from its end: the last three segments are namespace, pod and the file name.
"""

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sidecar.spool import METADATA_SUFFIX, PROFILE_SUFFIX, safe_component

_NAME = re.compile(
    r"^(?P<stamp>\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z)-(?P<comm>.+)-(?P<pid>\d+)-(?P<port>\d+)"
    + re.escape(PROFILE_SUFFIX)
    + "$"
)


@dataclass
class Record:
    key: str
    namespace: str
    pod: str
    when: datetime
    comm: str
    pid: int
    port: int
    size: int | None = None
    metadata_key: str | None = None  # None when the listing has no `.json` for it
    metadata: dict[str, Any] | None = None
    metadata_error: str | None = None
    top: list[dict[str, Any]] | None = None
    top_source: str | None = None  # "metadata" or "profile"
    top_error: str | None = None

    def meta(self, name: str) -> Any:
        """A metadata figure, or None when the metadata lacks it."""
        return (self.metadata or {}).get(name)

    def to_json(self, url: str) -> dict[str, Any]:
        return {
            "key": self.key,
            "url": url,
            "when": self.when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "namespace": self.namespace,
            "pod": self.pod,
            "comm": self.meta("comm") or self.comm,
            "pid": self.pid,
            "port": self.port,
            "bytes": self.size,
            "metadata_key": self.metadata_key,
            "metadata": self.metadata,
            "metadata_error": self.metadata_error,
            "top": self.top,
            "top_source": self.top_source,
            "top_error": self.top_error,
        }


def metadata_key(key: str) -> str:
    return key[: -len(PROFILE_SUFFIX)] + METADATA_SUFFIX


def parse_key(key: str) -> Record | None:
    """The record a profile key names, or None when the key does not follow the layout."""
    segments = key.split("/")
    if len(segments) < 3:
        return None
    match = _NAME.match(segments[-1])
    if match is None:
        return None
    try:
        when = datetime.strptime(match["stamp"], "%Y-%m-%dT%H-%M-%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return Record(
        key=key,
        namespace=segments[-3],
        pod=segments[-2],
        when=when,
        comm=match["comm"],
        pid=int(match["pid"]),
        port=int(match["port"]),
    )


def matches(record: Record, namespace: str | None, pod: str | None, since: datetime | None) -> bool:
    """Filters compare with the key's segments, which the watcher sanitised the same way."""
    if namespace is not None and record.namespace != safe_component(namespace):
        return False
    if pod is not None and record.pod != safe_component(pod):
        return False
    return since is None or record.when >= since


def newest_first(records: Iterable[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (r.when, r.key), reverse=True)


def parse_metadata(data: bytes) -> dict[str, Any]:
    """The `.json` document; ValueError naming what is wrong."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document


def metadata_top(document: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The `top` list a watcher that reads profiles writes, when present and well-formed."""
    top = document.get("top")
    if not isinstance(top, list) or not top:
        return None
    rows = [row for row in top if isinstance(row, dict) and isinstance(row.get("name"), str)]
    return rows or None
