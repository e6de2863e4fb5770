"""The README's table of chart values, generated from the comments of values.yaml, so the
values are documented in one place: `python -m testinfra.helm_values` prints it."""

import json
import re
import sys

import yaml

from testinfra.helm import CHART
from testinfra.helm_schema import SCHEMA_PATH

_KEY = re.compile(r"^( *)([A-Za-z][A-Za-z0-9_.-]*):")


def documented() -> dict[str, list[str]]:
    """{dotted key: the comment lines right above it} for every key of values.yaml."""
    found: dict[str, list[str]] = {}
    path: list[tuple[int, str]] = []
    comments: list[str] = []
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped.lstrip("#").strip())
            continue
        match = _KEY.match(line)
        if match:
            indent = len(match.group(1))
            path = [(i, k) for i, k in path if i < indent] + [(indent, match.group(2))]
            found[".".join(k for _, k in path)] = comments
        comments = []
    return found


def leaf_keys(node: dict | None = None, prefix: str = "") -> list[str]:
    """Every value the schema knows; a section (all members required) by its members."""
    node = node if node is not None else json.loads(SCHEMA_PATH.read_text())
    keys = []
    for name, child in node.get("properties", {}).items():
        if "required" in child:
            keys += leaf_keys(child, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _default(key: str) -> str:
    value = yaml.safe_load((CHART / "values.yaml").read_text())
    for part in key.split("."):
        value = value[part]
    return json.dumps(value, separators=(", ", ": "))


def markdown_table() -> str:
    comments = documented()
    rows = ["| value | default | meaning |", "|---|---|---|"]
    for key in leaf_keys():
        meaning = " ".join(line for line in comments.get(key, []) if line)
        meaning = re.sub(r"\s+", " ", meaning).replace("|", "\\|")
        rows.append(f"| `{key}` | `{_default(key)}` | {meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
