"""Log lines: one call is one line, whatever the app chose for the values it controls."""

import re

from hypothesis import given
from hypothesis import strategies as st

from sidecar import log


def test_control_characters_from_a_comm_are_escaped() -> None:
    comm = "x\r\x1b[2J\nts=0 level=error event=forged\u2028"
    line = log.format_line("info", "watching", {"pid": 7, "comm": comm})
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert 'comm="x\\r\\x1b[2J\\nts=0 level=error event=forged\\u2028"' in line


@given(st.text())
def test_any_value_stays_on_one_line(value: str) -> None:
    line = log.format_line("info", "e", {"v": value})
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", line)
    assert line.splitlines() == [line]
