"""oomdump.durations against Go's own time.ParseDuration (a Go program built here), case
by case: where we agree, and the few places we refuse or accept on purpose."""

import json
import subprocess
from pathlib import Path

import pytest

from oomdump.durations import format_duration, parse_duration
from testinfra.gobuild import build_local

GO_MAIN = """package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// One JSON string per input line; one answer per line: {"ns": N} or {"error": "..."}.
func main() {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var text string
		if err := json.Unmarshal(in.Bytes(), &text); err != nil {
			os.Exit(2)
		}
		d, err := time.ParseDuration(text)
		if err != nil {
			fmt.Printf("{\\"error\\": %q}\\n", err.Error())
		} else {
			fmt.Printf("{\\"ns\\": %d}\\n", d.Nanoseconds())
		}
	}
}
"""


@pytest.fixture(scope="module")
def go_parse(tmp_path_factory: pytest.TempPathFactory):
    source = tmp_path_factory.mktemp("go-parse-duration")
    (source / "go.mod").write_text("module oomdump.test/parseduration\n\ngo 1.22\n")
    (source / "main.go").write_text(GO_MAIN)
    binary = build_local("go-parse-duration", source)

    def parse(text: str) -> int | None:
        """Go's answer in nanoseconds, or None when Go refuses the text."""
        finished = subprocess.run(
            [str(binary)], input=json.dumps(text) + "\n", capture_output=True, text=True,
            check=True, timeout=60,
        )  # fmt: skip
        answer = json.loads(finished.stdout)
        return answer.get("ns")

    return parse


def ours(text: str) -> float | None:
    try:
        return parse_duration(text)
    except ValueError as error:
        assert "duration" in str(error)
        return None


AGREED = [
    "0", "0s", "500ms", "10s", "2m", "1m30s", "1.5s", "100us", "250µs", "250μs", "1h",
    ".5s", "5.s", "1h2m3s4ms5us6ns", "2562047h",  # the largest whole hours Go can hold
    # refused by both:
    "", "10", "5 s", "s", "1d", "abc", "1m30", ".", ".s", "1e3s", "1,5s", "1S", "1Ms",
    "2562048h", "9999999h",  # past 2^63 - 1 ns, which Go's Duration cannot hold
    "\u0663s", "\uff13s",  # digits of other scripts: Go reads ASCII digits only
]  # fmt: skip


@pytest.mark.parametrize("text", AGREED)
def test_agrees_with_go(go_parse, text: str) -> None:
    go = go_parse(text)
    mine = ours(text)
    if go is None:
        assert mine is None, f"Go refuses {text!r}, we read {mine}s"
    else:
        assert mine is not None, f"Go reads {text!r} as {go}ns, we refuse it"
        assert round(mine * 1e9) == pytest.approx(go, rel=1e-12, abs=1)


# What we refuse although Go accepts it: a sign. Nothing in oomdump waits a negative
# time (a negative COOLDOWN or WATCH_TIME would be a busy loop or an error), and a `+`
# would only be a second spelling of the same value.
SIGNED = ["-5s", "-0", "-1m30s", "+5s", "+0"]


@pytest.mark.parametrize("text", SIGNED)
def test_refuses_a_sign_which_go_accepts(go_parse, text: str) -> None:
    assert go_parse(text) is not None
    assert ours(text) is None


# What we accept although Go refuses it: surrounding whitespace, as environment values
# and YAML scalars often carry it. (The annotation registry refuses it for annotations.)
PADDED = [" 30s ", "30s\n", "\t1m"]


@pytest.mark.parametrize("text", PADDED)
def test_accepts_surrounding_whitespace_which_go_refuses(go_parse, text: str) -> None:
    assert go_parse(text) is None
    assert round(parse_duration(text) * 1e9) == go_parse(text.strip())


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.25, "250ms"), (90, "1m30s"), (30, "30s"), (3600, "1h"), (1.5, "1.5s")],
)
def test_formats_round_trip(go_parse, seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)
    assert go_parse(text) == round(seconds * 1e9)  # and Go reads what we write


def test_the_go_helper_is_what_it_says(go_parse) -> None:
    """Guards the comparisons above against a helper that refuses or accepts everything."""
    assert go_parse("1m30s") == 90 * 10**9
    assert go_parse("1d") is None
    assert Path(__file__).name == "test_durations.py"
