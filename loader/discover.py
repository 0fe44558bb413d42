"""Finding bundles: <preseed-dir>/<namespace>/<name>.tar (or .tar.gz, .tgz, .tar.zst, .tzst)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$")
_NAMESPACE_MAX = 76
SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst")


@dataclass(frozen=True)
class BundleFile:
    namespace: str
    path: Path
    sha256: str | None = None  # what the node image's manifest lists; checked when loaded


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str
    refused: bool = False  # an error (exit code 1), not just a warning


def valid_namespace(name: str) -> bool:
    """containerd's identifier rule for namespace names."""
    return len(name) <= _NAMESPACE_MAX and bool(_NAMESPACE_RE.match(name))


def find_bundles(preseed_dir: Path) -> tuple[list[BundleFile], list[Skipped]]:
    """List bundles and the entries skipped (with why)."""
    bundles: list[BundleFile] = []
    skipped: list[Skipped] = []
    for top in sorted(preseed_dir.iterdir()):
        if not top.is_dir():
            skipped.append(Skipped(top, "not a namespace directory"))
            continue
        if not valid_namespace(top.name):
            skipped.append(Skipped(top, "not a valid containerd namespace name", refused=True))
            continue
        try:
            entries = sorted(top.iterdir())
        except OSError as e:
            skipped.append(Skipped(top, f"cannot list: {e.strerror or e}"))
            continue
        for entry in entries:
            if entry.is_dir():
                skipped.append(Skipped(entry, "directory inside a namespace folder"))
            elif not entry.name.endswith(SUFFIXES):
                skipped.append(Skipped(entry, "not a bundle (.tar, .tar.gz, .tgz, .tar.zst, .tzst)"))
            elif not entry.is_file():
                skipped.append(Skipped(entry, "not a regular file"))
            else:
                bundles.append(BundleFile(top.name, entry))
    return bundles, skipped
