"""Log lines that a request cannot forge: control characters in any field are escaped.

A request's uid, names and error texts are the sender's to choose. A newline in one of
them would otherwise start a line of its own in the log ("... result=injected\\n2026-...
INFO webhook uid=x result=denied"), and ESC sequences would rewrite a terminal. The
formatter escapes every character Python does not count as printable (C0 and C1 controls,
DEL, line and paragraph separators, other separators than the space) in the formatted
message of every record, whatever the logger; the traceback of an exception, which is
ours, keeps its lines.
"""

import logging

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    if text.isprintable():
        return text  # nearly every message: one C-level scan
    return "".join(char if char.isprintable() else _escaped(char) for char in text)


def _escaped(char: str) -> str:
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


class EscapingFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)


FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(level: str) -> None:
    """The root handler for the webhook and uvicorn (uvicorn's loggers propagate to it)."""
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
