"""One line per decision on stderr, as `key=value` pairs (grep- and logfmt-friendly)."""

import re
import sys
import threading
import time
from typing import Any, TextIO

_lock = threading.Lock()
_stream: TextIO = sys.stderr


def set_stream(stream: TextIO) -> None:
    """Send log lines elsewhere (tests capture them)."""
    global _stream
    _stream = stream


def _escape(character: str) -> str:
    if character in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[character]
    return f"\\x{ord(character):02x}" if ord(character) < 0x100 else f"\\u{ord(character):04x}"


# Control characters (C0, DEL, C1, and the Unicode line and paragraph separators) in a value
# the app chose (its comm, an HTTP answer) could end a line or drive a terminal: each is
# written as an escape, so one call is always one line.
_NAMED_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSAFE = re.compile('[\x00-\x1f\x7f-\x9f\u2028\u2029\\\\"]')
_NEEDS_QUOTES = re.compile('[\\s"=\\\\\x00-\x1f\x7f-\x9f\u2028\u2029]')


def _quote(value: Any) -> str:
    text = str(value)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return '"' + _UNSAFE.sub(lambda match: _escape(match.group()), text) + '"'


def format_line(level: str, event: str, fields: dict[str, Any]) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    parts = [f"ts={stamp}Z", f"level={level}", f"event={event}"]
    parts += [f"{key}={_quote(value)}" for key, value in fields.items() if value is not None]
    return " ".join(parts)


def emit(level: str, event: str, **fields: Any) -> None:
    line = format_line(level, event, fields)
    with _lock:
        _stream.write(line + "\n")
        _stream.flush()


def info(event: str, **fields: Any) -> None:
    emit("info", event, **fields)


def warn(event: str, **fields: Any) -> None:
    emit("warn", event, **fields)


def error(event: str, **fields: Any) -> None:
    emit("error", event, **fields)
