"""Structured (logfmt) log lines on stderr: one event per line."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Iterable, TextIO

Value = str | int | float | bool | None | Iterable[str]


def _format_value(value: Value) -> str:
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:.3f}"
    elif isinstance(value, (str, int)):
        text = str(value)
    else:
        text = ",".join(value)
    if text == "" or any(c in text for c in ' "=\\') or not text.isprintable():
        return json.dumps(text, ensure_ascii=False)
    return text


def format_line(level: str, msg: str, fields: dict[str, Value]) -> str:
    """Render one logfmt line (without newline)."""
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    parts = [f"time={now}", f"level={level}", f"msg={_format_value(msg)}"]
    parts += [f"{key}={_format_value(value)}" for key, value in fields.items()]
    return " ".join(parts)


class Logger:
    """Writes log lines to a stream (stderr unless given)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def log(self, level: str, msg: str, **fields: Value) -> None:
        stream = self._stream or sys.stderr
        stream.write(format_line(level, msg, fields) + "\n")
        stream.flush()

    def info(self, msg: str, **fields: Value) -> None:
        self.log("info", msg, **fields)

    def warning(self, msg: str, **fields: Value) -> None:
        self.log("warning", msg, **fields)

    def error(self, msg: str, **fields: Value) -> None:
        self.log("error", msg, **fields)


_default = Logger()
info = _default.info
warning = _default.warning
error = _default.error
