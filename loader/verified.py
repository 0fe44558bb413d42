"""The manifest's sha256 check at load time: hash a bundle once, then trust what was recorded.

When a bundle has been hashed and matched its manifest entry, its image records get
preseed.dev/verified=<sha256>:<st_dev>:<st_ino>:<st_size>:<st_mtime_ns>:<st_ctime_ns>, the
file's stat when it was hashed. A later run accepts the bundle without hashing it only when
containerd still holds it unchanged and every one of its records carries the label for the
manifest's sha256 and the file's current stat. ctime cannot be set from user space, so a file
rewritten since has another stat, even with its size and mtime restored.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from loader.api import images_pb2
from loader.errors import BundleError

LABEL_VERIFIED = "preseed.dev/verified"
HASHED = "hashed"
RECORDED = "recorded"


class Tampering(BundleError):
    """A bundle does not match the node image's manifest; it is refused, not loaded."""


def stat_key(st: os.stat_result) -> str:
    """What a file looked like: device, inode, size, mtime and ctime (ns)."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def label_value(sha256: str, st: os.stat_result) -> str:
    return f"{sha256}:{stat_key(st)}"


@dataclass(frozen=True)
class Check:
    """How a bundle passed the manifest check, and the label its records get."""

    how: str  # HASHED or RECORDED
    label: str
    stat: os.stat_result


def recorded(images: Sequence[images_pb2.Image], sha256: str, st: os.stat_result) -> bool:
    """True if every record carries the verification of this sha256 and this stat."""
    want = label_value(sha256, st)
    return bool(images) and all(i.labels.get(LABEL_VERIFIED) == want for i in images)


def hash_file(path: Path) -> tuple[str, os.stat_result]:
    """The file's sha256 and its stat; BundleError if it changed while it was read."""
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        digest = hashlib.file_digest(f, "sha256").hexdigest()
        after = os.fstat(f.fileno())
    if stat_key(before) != stat_key(after):
        raise Tampering("tampering: the bundle changed while it was hashed")
    return digest, before


def check(
    path: Path,
    sha256: str,
    st: os.stat_result,
    images: Sequence[images_pb2.Image] | None,
) -> Check:
    """Check a bundle against the manifest's sha256; Tampering if it does not match.

    st is the file's stat at the start of this bundle's work; images are its records when
    containerd holds it unchanged (None otherwise). Hashes unless the records show that
    these bytes were hashed before.
    """
    if images is not None and recorded(images, sha256, st):
        return Check(RECORDED, label_value(sha256, st), st)
    digest, hashed = hash_file(path)
    if digest != sha256:
        raise Tampering(f"tampering: sha256 {digest}, the manifest says {sha256}")
    if stat_key(hashed) != stat_key(st):
        raise Tampering("tampering: the bundle changed while it was checked")
    return Check(HASHED, label_value(sha256, hashed), hashed)


def unchanged_since(path: Path, checked: Check) -> None:
    """Tampering if the file is no longer what was checked (after its content was read)."""
    if stat_key(os.stat(path)) != stat_key(checked.stat):
        raise Tampering("tampering: the bundle changed while it was loaded")
