"""`oomdump dumps top` and `oomdump dumps diff`: what holds the memory, and what grew."""

import json
import sys
from dataclasses import asdict

from oomdump.cli import humanize, profiles
from oomdump.cli.resolve import Dump
from oomdump.cli.table import render


def top(dump: Dump, sample_index: str, n: int, by_cum: bool, output: str) -> None:
    heap = profiles.read(dump.read(), dump.name)
    rows = profiles.top(heap, dump.name, sample_index, n, by_cum)
    total = profiles.total(heap, sample_index)
    if output == "json":
        document = {
            "dump": dump.name,
            "url": dump.url,
            "sample_index": sample_index,
            "sort": "cum" if by_cum else "flat",
            "total_bytes": total,
            "functions": [asdict(r) for r in rows],
        }
        print(json.dumps(document, indent=2))
        return
    print(f"{dump.name}: {sample_index}, {humanize.size(total)} in all ({total} bytes)")
    running = 0
    table = []
    for r in rows:
        running += r.flat_bytes
        table.append(
            [
                humanize.size(r.flat_bytes),
                humanize.share(r.flat_share),
                humanize.share(running / total if total else 0.0),
                humanize.size(r.cum_bytes),
                humanize.share(r.cum_share),
                r.name,
            ]
        )
    headers = ("FLAT", "FLAT%", "SUM%", "CUM", "CUM%", "FUNCTION")
    render(headers, table, right=headers[:-1])


def diff(before: Dump, after: Dump, sample_index: str, n: int, output: str) -> None:
    heaps = (
        profiles.read(before.read(), before.name),
        profiles.read(after.read(), after.name),
    )
    rows = profiles.growth(*heaps, names=(before.name, after.name), sample_index=sample_index, n=n)
    _warn_order(before, after)
    if output == "json":
        document = {
            "before": before.name,
            "after": after.name,
            "sample_index": sample_index,
            "before_total_bytes": profiles.total(heaps[0], sample_index),
            "after_total_bytes": profiles.total(heaps[1], sample_index),
            "growth": [asdict(r) for r in rows],
        }
        print(json.dumps(document, indent=2))
        return
    totals = [profiles.total(h, sample_index) for h in heaps]
    print(
        f"{sample_index}: {humanize.size(totals[0])} in {before.name}, "
        f"{humanize.size(totals[1])} in {after.name}"
    )
    if not rows:
        print("Nothing grew.", file=sys.stderr)
        return
    table = [
        [
            "+" + humanize.size(r.delta_bytes),
            humanize.share(r.delta_share),
            humanize.size(r.before_bytes),
            humanize.size(r.after_bytes),
            r.name,
        ]
        for r in rows
    ]
    headers = ("GREW", "GREW%", "BEFORE", "AFTER", "FUNCTION")
    render(headers, table, right=headers[:-1])


def _warn_order(before: Dump, after: Dump) -> None:
    """Say so when the captures are out of order or of different processes: the table is
    still B minus A, which is what was asked."""
    a, b = before.record, after.record
    if a is None or b is None:
        return
    if a.when > b.when:
        print(f"note: {before.name} is later than {after.name}", file=sys.stderr)
    if a.pid != b.pid:
        print(f"note: the dumps are of different processes (pid {a.pid}, {b.pid})", file=sys.stderr)
