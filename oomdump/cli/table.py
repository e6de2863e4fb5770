"""Plain aligned tables, as kubectl prints them: upper-case headers, two spaces apart."""

import sys
from collections.abc import Sequence
from typing import TextIO


def escape(text: str) -> str:
    """Names come from the app (comm, function names): no control character reaches the
    terminal."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def render(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    right: Sequence[str] = (),
    out: TextIO | None = None,
) -> None:
    """Columns named in `right` are right-aligned (figures); the last column is not padded."""
    stream = out or sys.stdout
    cells = [list(headers), *([escape(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        parts = []
        for i, cell in enumerate(row):
            if i == len(row) - 1:
                parts.append(cell)
            elif headers[i] in right:
                parts.append(cell.rjust(widths[i]))
            else:
                parts.append(cell.ljust(widths[i]))
        print("  ".join(parts).rstrip(), file=stream)
