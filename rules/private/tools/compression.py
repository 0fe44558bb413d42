"""Deterministic compression writers and auto-detecting readers.

Kinds are "none", "gzip" (fixed header: no name, mtime 0) and "zstd"
(single-threaded, no content size, with a checksum).
"""

from __future__ import annotations

import contextlib
import gzip
from typing import BinaryIO, Iterator

import zstandard

KINDS = ("none", "gzip", "zstd")
GZIP_LEVEL = 6
ZSTD_LEVEL = 3
CHUNK_SIZE = 1 << 20

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# OCI layer media types by compression.
LAYER_MEDIA_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}

# File name suffixes of tarballs by compression, as the loader reads them.
TAR_SUFFIXES = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown compression {kind!r}; use one of "
                         f"{', '.join(KINDS)}")
    return kind


def detect(head: bytes) -> str:
    """The compression of a stream starting with head."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return "none"


def detect_file(path: str) -> str:
    with open(path, "rb") as f:
        return detect(f.read(4))


def open_gzip(raw: BinaryIO) -> gzip.GzipFile:
    """A gzip writer over raw with a fixed header (no name, mtime 0)."""
    return gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL,
                         fileobj=raw, mtime=0)


class _Uncompressed:
    """A writer that passes data through and leaves raw open on close."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def write(self, data: bytes) -> int:
        return self._raw.write(data)


@contextlib.contextmanager
def open_writer(raw: BinaryIO, kind: str) -> Iterator[BinaryIO]:
    """Yields a writer compressing into raw; raw stays open afterwards."""
    check_kind(kind)
    if kind == "gzip":
        with open_gzip(raw) as gz:
            yield gz  # type: ignore[misc]
    elif kind == "zstd":
        compressor = zstandard.ZstdCompressor(
            level=ZSTD_LEVEL, write_checksum=True, write_content_size=False,
            threads=0)
        with compressor.stream_writer(raw, closefd=False) as zw:
            yield zw  # type: ignore[misc]
    else:
        yield _Uncompressed(raw)  # type: ignore[misc]


@contextlib.contextmanager
def open_reader(path: str) -> Iterator[BinaryIO]:
    """Yields a reader of path's content, decompressed whatever its kind."""
    kind = detect_file(path)
    with open(path, "rb") as raw:
        if kind == "gzip":
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz  # type: ignore[misc]
        elif kind == "zstd":
            reader = zstandard.ZstdDecompressor().stream_reader(
                raw, closefd=False, read_across_frames=True)
            with reader:
                yield reader  # type: ignore[misc]
        else:
            yield raw
