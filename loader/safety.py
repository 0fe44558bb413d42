"""Limits that keep reading a bundle bounded in memory, disk and time, and archive member checks.

Every limit is a constant here; each refusal names the limit in its message.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from typing import Any, Protocol

from loader.errors import BundleError

# A JSON document (oci-layout, index.json, manifest.json, manifests, indexes, configs).
MAX_JSON_SIZE = 4 << 20
# Nesting of arrays and objects in one JSON document (OCI documents need about 5).
MAX_JSON_DEPTH = 64
# Image indexes below index.json: index.json -> index -> manifest is 1.
MAX_INDEX_DEPTH = 1
# Members of one bundle tar (an OCI layout needs one per blob, a docker archive ~3 per layer).
MAX_MEMBERS = 10_000
# Bytes of small members one bundle keeps in memory while it is read.
MAX_IN_MEMORY = 128 << 20
# A bundle compressed as a whole may expand to this many times its file size, or to
# EXPANSION_FLOOR bytes, whichever is more.
MAX_EXPANSION_RATIO = 100
EXPANSION_FLOOR = 64 << 20


def expansion_limit(compressed_size: int) -> int:
    """The most bytes a compressed bundle of compressed_size bytes may expand to."""
    return max(EXPANSION_FLOOR, MAX_EXPANSION_RATIO * compressed_size)


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (scalars 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def parse_json(data: bytes, what: str) -> Any:
    """Parse one JSON document within MAX_JSON_SIZE and MAX_JSON_DEPTH; BundleError if not."""
    if len(data) > MAX_JSON_SIZE:
        raise BundleError(f"{what} is too large ({len(data)} bytes, at most {MAX_JSON_SIZE})")
    try:
        value = json.loads(data)
    except RecursionError:
        raise BundleError(f"{what} is nested too deeply (at most {MAX_JSON_DEPTH})") from None
    except (ValueError, UnicodeDecodeError) as e:
        reason = " ".join(str(e).split())
        raise BundleError(f"{what} is not valid JSON: {reason}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise BundleError(f"{what} is nested too deeply (at most {MAX_JSON_DEPTH})")
    return value


def _unsafe_name(name: str) -> str | None:
    """Why a member name (or hard link target) is unsafe, or None."""
    if name.startswith("/"):
        return f"absolute member name {name}"
    if ".." in name.split("/"):
        return f"member name {name} has '..'"
    if "\0" in name or posixpath.normpath(name).startswith("../"):
        return f"member name {name!r} is not a plain path"
    return None


def check_member(info: tarfile.TarInfo, count: int) -> None:
    """Refuse what a bundle tar must not hold: unsafe names, links out, special files."""
    if count > MAX_MEMBERS:
        raise BundleError(f"more than {MAX_MEMBERS} archive members")
    reason = _unsafe_name(info.name)
    if reason:
        raise BundleError(reason)
    if info.issym():
        # Allowed inside the archive (skopeo's docker archives link layers); never read.
        target = posixpath.normpath(posixpath.join(posixpath.dirname(info.name), info.linkname))
        if info.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise BundleError(
                f"symbolic link member {info.name} points to {info.linkname}, outside the archive"
            )
        return
    if info.islnk():
        if info.linkname.startswith("/") or ".." in info.linkname.split("/"):
            raise BundleError(
                f"hard link member {info.name} links to {info.linkname}, outside the archive"
            )
    elif info.ischr() or info.isblk():
        raise BundleError(f"device member {info.name}")
    elif info.isfifo():
        raise BundleError(f"fifo member {info.name}")
    elif info.issparse():
        raise BundleError(f"sparse member {info.name}")
    elif not (info.isfile() or info.isdir()):
        raise BundleError(f"member {info.name} of unsupported type {info.type!r}")


class MemoryBudget:
    """Counts the bytes of small members a bundle keeps in memory."""

    def __init__(self) -> None:
        self.used = 0

    def take(self, size: int) -> None:
        self.used += size
        if self.used > MAX_IN_MEMORY:
            raise BundleError(
                f"small members take more than {MAX_IN_MEMORY} bytes of memory"
            )


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class BoundedReader:
    """A decompressed stream that refuses to expand beyond a limit."""

    def __init__(self, stream: _Readable, limit: int, compressed_size: int) -> None:
        self._stream = stream
        self._limit = limit
        self._compressed = compressed_size
        self.total = 0

    def read(self, n: int = -1, /) -> bytes:
        if n is None or n < 0:
            n = self._limit + 1 - self.total
        data = self._stream.read(min(n, self._limit + 1 - self.total) or 1)
        self.total += len(data)
        if self.total > self._limit:
            raise BundleError(
                f"expands to more than {self._limit} bytes from {self._compressed}"
                f" (at most {MAX_EXPANSION_RATIO} times its size, or {EXPANSION_FLOOR} bytes)"
            )
        return data

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> BoundedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
