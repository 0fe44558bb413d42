"""Log lines on stderr, one event per line: logfmt (text) or one JSON object (json)."""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime, timezone
from typing import Iterable, TextIO

Value = str | int | float | bool | None | Iterable[str]
FORMATS = ("text", "json")


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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_line(level: str, msg: str, fields: dict[str, Value]) -> str:
    """Render one logfmt line (without newline)."""
    parts = [f"time={_now()}", f"level={level}", f"msg={_format_value(msg)}"]
    parts += [f"{key}={_format_value(value)}" for key, value in fields.items()]
    return " ".join(parts)


def _json_value(value: Value) -> object:
    if value is None or isinstance(value, (str, int, float, bool)):
        return round(value, 3) if isinstance(value, float) else value
    return list(value)


def format_json(level: str, msg: str, fields: dict[str, Value]) -> str:
    """Render one JSON object (without newline)."""
    body: dict[str, object] = {"time": _now(), "level": level, "msg": msg}
    for key, value in fields.items():
        body[key] = _json_value(value)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


class Logger:
    """Writes whole log lines to a stream (stderr unless given), from any thread."""

    def __init__(self, stream: TextIO | None = None, fmt: str = "text") -> None:
        self._stream = stream
        self.format = fmt
        self._lock = threading.Lock()

    def log(self, level: str, msg: str, **fields: Value) -> None:
        render = format_json if self.format == "json" else format_line
        line = render(level, msg, fields) + "\n"
        with self._lock:
            stream = self._stream or sys.stderr
            stream.write(line)
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


def set_format(fmt: str) -> None:
    """Choose text (logfmt) or json for the default logger."""
    _default.format = fmt
