"""Helpers shared by the command line tools."""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Callable, Sequence

_MODE_RE = re.compile(r"0?[0-7]{3,4}")


def canonical_json(obj: Any) -> bytes:
    """Serializes obj with sorted keys, no spaces, UTF-8, no newline."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def load_json(path: str) -> Any:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"file {path}: invalid JSON: {e}") from None


def parse_mode(value: Any, where: str) -> int:
    """Parses an octal mode string such as "0755"."""
    if not isinstance(value, str) or not _MODE_RE.fullmatch(value):
        raise ValueError(f"{where}: mode must be an octal string like "
                         f"\"0644\", got {value!r}")
    mode = int(value, 8)
    if mode > 0o7777:
        raise ValueError(f"{where}: mode {value!r} is out of range")
    return mode


def check_keys(obj: Any, where: str, required: Sequence[str],
               optional: Sequence[str] = ()) -> dict:
    """Checks that obj is an object with the required and no unknown keys."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ValueError(f"{where}: missing key {missing[0]!r}")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}")
    return obj


def run(prog: str, main: Callable[[Sequence[str] | None], None],
        argv: Sequence[str] | None = None) -> None:
    """Runs main, turning bad input into a one-line error and exit code 1."""
    try:
        main(argv)
    except OSError as e:
        where = f"file {e.filename}: " if e.filename else ""
        sys.exit(f"{prog}: {where}{e.strerror or e}")
    except ValueError as e:
        sys.exit(f"{prog}: {e}")
