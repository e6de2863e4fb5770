"""Run the CLI as the operator does: in this process through `main` (fast), or as the installed
console script in a child process."""

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from oomdump.cli.main import main

SCRIPTS = Path(sys.executable).parent  # the venv's bin, where pip puts console scripts
ROW = re.compile(r"^\s*(-?\d+)B?\s+([-\d.]+)%\s+([-\d.]+)%\s+(-?\d+)B?\s+([-\d.]+)%\s+(.+)$")


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    capsys.readouterr()
    try:
        code = main([*args])
    except SystemExit as end:  # argparse ends usage errors and --help this way
        code = int(end.code or 0)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def script(name: str) -> Path:
    path = SCRIPTS / name
    if not path.is_file():
        found = shutil.which(name)
        assert found, f"console script {name} is not installed (pip install -e .)"
        path = Path(found)
    return path


def table(out: str) -> list[dict[str, str]]:
    """The rows of a table the CLI printed, by header (cells hold no double spaces)."""
    lines = [line for line in out.splitlines() if line.strip()]
    header = re.split(r"\s{2,}", lines[0].strip())
    rows = []
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def pprof_top(go: str, *args: str) -> list[tuple[str, int, int]]:
    """(name, flat, cum) rows of `go tool pprof -top` in bytes, in its order."""
    done = subprocess.run(
        [go, "tool", "pprof", "-top", "-unit=B", "-nodefraction=0", "-nodecount=100000", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = []
    for line in done.stdout.splitlines():
        match = ROW.match(line)
        if match:
            rows.append((match[6].removesuffix(" (inline)"), int(match[1]), int(match[4])))
    assert rows, done.stdout + done.stderr
    return rows
