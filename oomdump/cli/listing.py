"""`oomdump dumps list`: the dumps in a store, newest first, filtered, with their culprit."""

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from oomdump.cli import humanize, profiles
from oomdump.cli.errors import CliError
from oomdump.cli.records import (
    Record,
    matches,
    metadata_key,
    metadata_top,
    newest_first,
    parse_key,
    parse_metadata,
)
from oomdump.cli.stores import MAX_LISTED, MAX_METADATA_BYTES, MAX_OBJECT_BYTES, Store
from oomdump.cli.table import render
from sidecar.spool import PROFILE_SUFFIX, safe_component

HEADERS = ("WHEN", "NAMESPACE", "POD", "PROCESS", "PORT", "USAGE", "GC", "TOP", "KEY")


def narrowing(store: Store, namespace: str | None, pod: str | None, exact_prefix: bool) -> str:
    """The key prefix to list: the store's prefix, then namespace and pod when the prefix is
    known to be the one the watcher used (otherwise the filters apply to listed keys)."""
    under = store.prefix
    if exact_prefix and namespace is not None:
        under += safe_component(namespace) + "/"
        if pod is not None:
            under += safe_component(pod) + "/"
    return under


def collect(
    store: Store,
    under: str,
    namespace: str | None,
    pod: str | None,
    since: timedelta | None,
    limit: int,
) -> tuple[list[Record], int]:
    """(the newest `limit` matching records, how many matched in all)."""
    keys: dict[str, int] = {}
    listed = 0
    for item in store.objects(under):
        listed += 1
        keys[item.key] = item.size
    if listed >= MAX_LISTED:
        print(
            f"warning: listed only the first {MAX_LISTED} objects; narrow with --prefix, -n, --pod",
            file=sys.stderr,
        )
    cutoff = datetime.now(UTC) - since if since is not None else None
    found = []
    for key, size in keys.items():
        if not key.endswith(PROFILE_SUFFIX):
            continue
        record = parse_key(key)
        if record is None or not matches(record, namespace, pod, cutoff):
            continue
        record.size = size
        if metadata_key(key) in keys:
            record.metadata_key = metadata_key(key)
        found.append(record)
    ordered = newest_first(found)
    return (ordered[:limit] if limit else ordered), len(ordered)


def enrich(store: Store, record: Record, compute_top: bool) -> None:
    """Read the record's metadata, and its top functions (from the metadata, or the profile)."""
    if record.metadata_key is not None:
        try:
            record.metadata = parse_metadata(store.read(record.metadata_key, MAX_METADATA_BYTES))
        except (CliError, ValueError) as error:
            record.metadata_error = getattr(error, "message", None) or str(error)
        else:
            record.top = metadata_top(record.metadata)
            if record.top is not None:
                record.top_source = "metadata"
    if record.top is None and compute_top:
        try:
            rows = profiles.top_rows(store.read(record.key, MAX_OBJECT_BYTES), 3, record.key)
        except CliError as error:
            record.top_error = error.message
        else:
            record.top = rows
            record.top_source = "profile"


def _usage(record: Record) -> str:
    usage, limit, percent = record.meta("usage"), record.meta("limit"), record.meta("percent")
    if not isinstance(usage, int):
        return "-"
    if isinstance(limit, int) and limit > 0:
        shown = percent if isinstance(percent, int | float) else 100 * usage / limit
        return f"{humanize.size(usage)}/{humanize.size(limit)} ({shown:.0f}%)"
    return humanize.size(usage)


def _gc(record: Record) -> str:
    gc = record.meta("gc")
    return "-" if gc is None else ("gc=1" if gc else "first")


def _top(record: Record) -> str:
    if record.top:
        best = record.top[0]
        flat, share = best.get("flat_bytes"), best.get("flat_share")
        figures = humanize.size(flat) if isinstance(flat, int) else "?"
        if isinstance(share, int | float):
            figures += f" ({100 * share:.0f}%)"
        return f"{best['name']} {figures}"
    if record.top_error is not None:
        return "unreadable"
    return "-"


def row(record: Record) -> list[str]:
    comm = record.meta("comm")
    return [
        record.when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        record.namespace,
        record.pod,
        f"{comm if isinstance(comm, str) else record.comm}/{record.pid}",
        str(record.port),
        _usage(record),
        _gc(record),
        _top(record),
        record.key,
    ]


def show(store: Store, records: list[Record], total: int, output: str) -> None:
    if output == "json":
        document: list[dict[str, Any]] = [r.to_json(store.describe(r.key)) for r in records]
        print(json.dumps(document, indent=2))
        return
    if not records:
        print(f"No dumps found in {store.describe()}.", file=sys.stderr)
        return
    render(HEADERS, [row(r) for r in records], right=("PORT",))
    for record in records:
        if record.top_error is not None:
            print(f"{record.key}: {record.top_error}", file=sys.stderr)
    if total > len(records):
        print(f"({total - len(records)} older dumps not shown; see --limit)", file=sys.stderr)
