"""The README's generated tables, each between markers of its own, from the registry that
defines it: the annotations (webhook.annotations), the watcher's variables
(oomdump.watcher_env) and the chart's values (deploy/helm/oomdump/values.yaml).

`python -m testinfra.readme_tables` rewrites every block of README.md that drifted;
tests/test_readme_tables.py fails while one has.
"""

import sys
from collections.abc import Callable
from pathlib import Path

from oomdump import watcher_env
from testinfra import helm_values
from webhook import annotations

README = Path(__file__).resolve().parents[1] / "README.md"
REGENERATE = ".venv/bin/python -m testinfra.readme_tables"

# block name -> (the module it is generated from, its generator)
TABLES: dict[str, tuple[str, Callable[[], str]]] = {
    "annotations": ("webhook/annotations.py", annotations.markdown_table),
    "watcher-env": ("oomdump/watcher_env.py", watcher_env.markdown_table),
    "helm-values": ("deploy/helm/oomdump/values.yaml", helm_values.markdown_table),
}


def begin_marker(name: str) -> str:
    source, _ = TABLES[name]
    return f"<!-- {name}:begin (generated from {source}; tests fail when this drifts) -->"


def end_marker(name: str) -> str:
    return f"<!-- {name}:end -->"


def _span(text: str, name: str) -> tuple[int, int]:
    """Where the block's body starts and ends in `text`; ValueError naming missing markers."""
    begin, end = begin_marker(name), end_marker(name)
    if begin not in text or end not in text:
        raise ValueError(f"README has no `{begin}` ... `{end}` markers")
    start = text.index(begin) + len(begin) + 1
    return start, text.index(end, start)


def block(text: str, name: str) -> str:
    start, stop = _span(text, name)
    return text[start:stop]


def rewrite(text: str) -> str:
    """`text` with every generated block brought up to date."""
    for name, (_, generate) in TABLES.items():
        start, stop = _span(text, name)
        text = text[:start] + generate() + text[stop:]
    return text


def main(path: Path = README) -> int:
    text = path.read_text(encoding="utf-8")
    updated = rewrite(text)
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    print("updated" if updated != text else "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else README))
