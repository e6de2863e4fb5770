"""One line per decision on stderr, as `key=value` pairs (grep- and logfmt-friendly)."""

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


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


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
