"""Which bundles may be loaded: ownership and modes, no symlinks out, the node image's manifest.

Whoever can write a bundle, or a folder on the way to it, could put images into the namespace
Kubernetes trusts. So every folder from / down to a bundle, and the bundle itself, must be owned
by root and not writable by group or others (folders above the preseed folder may be sticky,
like /tmp). The checks go by path: once no one but root can write any folder on the way, no one
but root can swap what a path names between the check and the read.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loader import safety
from loader.discover import BundleFile, Skipped, valid_namespace
from loader.errors import LoaderError, UsageError

ALLOW_FLAG = "--allow-insecure-permissions"
MANIFEST_VERSION = 1
HINT = f"only root may write bundles and their folders ({ALLOW_FLAG} allows it, for development)"


def insecure(st: os.stat_result, sticky_ok: bool = False) -> str | None:
    """Why a file or folder with this stat is not safe to trust, or None."""
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        if sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
            return None
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


@dataclass(frozen=True)
class ManifestEntry:
    """One bundle the node image was built with."""

    namespace: str
    path: str  # relative to the preseed folder: <namespace>/<file>
    sha256: str
    size: int


@dataclass
class Manifest:
    """etc/preseed/manifest.json of a node image."""

    preseed_dir: str
    bundles: dict[str, ManifestEntry] = field(default_factory=dict)


def _entry(raw: Any, i: int) -> ManifestEntry:
    what = f"manifest bundle {i}"
    if not isinstance(raw, dict):
        raise UsageError(f"{what} is not an object")
    namespace, path, digest, size = (raw.get(k) for k in ("namespace", "path", "sha256", "size"))
    if not isinstance(namespace, str) or not valid_namespace(namespace):
        raise UsageError(f"{what} has no valid namespace")
    if not isinstance(path, str) or path.split("/")[0] != namespace or len(path.split("/")) != 2:
        raise UsageError(f"{what} has no path <namespace>/<file>")
    if path.split("/")[1] in ("", ".", ".."):
        raise UsageError(f"{what} has no path <namespace>/<file>")
    if not isinstance(digest, str) or len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise UsageError(f"{what} has no sha256 (64 lowercase hex digits)")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UsageError(f"{what} has no valid size")
    return ManifestEntry(namespace, path, digest, size)


def read_manifest(path: Path, allow_insecure: bool = False) -> tuple[Manifest, list[str]]:
    """Read and check a manifest file; returns it and warnings. UsageError if unusable."""
    warnings: list[str] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise UsageError(f"cannot open manifest {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        why = insecure(os.fstat(fd))
        if why:
            if not allow_insecure:
                raise UsageError(f"manifest {path} is {why}; {HINT}")
            warnings.append(f"manifest {path} is {why}; allowed by {ALLOW_FLAG}")
        data = f.read(safety.MAX_JSON_SIZE + 1)
    try:
        body = safety.parse_json(data, f"manifest {path}")
    except LoaderError as e:
        raise UsageError(str(e)) from None
    if not isinstance(body, dict) or body.get("version") != MANIFEST_VERSION:
        raise UsageError(f"manifest {path} is not a version {MANIFEST_VERSION} preseed manifest")
    raw_bundles = body.get("bundles")
    if not isinstance(raw_bundles, list):
        raise UsageError(f"manifest {path} has no bundles list")
    manifest = Manifest(str(body.get("preseed_dir", "")))
    for i, raw in enumerate(raw_bundles):
        entry = _entry(raw, i)
        if entry.path in manifest.bundles:
            raise UsageError(f"manifest {path} lists {entry.path} twice")
        manifest.bundles[entry.path] = entry
    return manifest, warnings


@dataclass
class Vetted:
    """The outcome of vetting: bundles to load, bundles refused (with why), warnings."""

    bundles: list[BundleFile] = field(default_factory=list)
    refused: list[Skipped] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)


class _Vetter:
    def __init__(self, preseed_dir: Path, allow_insecure: bool) -> None:
        self.preseed_dir = preseed_dir
        self.root = preseed_dir.resolve()
        self.allow_insecure = allow_insecure
        self.out = Vetted()

    def permissions(
        self, path: Path, st: os.stat_result, what: str, sticky_ok: bool = False
    ) -> bool:
        """False (and the path refused) if st is insecure and that is not allowed."""
        why = insecure(st, sticky_ok)
        if why is None:
            return True
        if self.allow_insecure:
            self.out.warnings.append((path, f"{what} is {why}; allowed by {ALLOW_FLAG}"))
            return True
        self.out.refused.append(Skipped(path, f"{what} is {why}; {HINT}", refused=True))
        return False

    def root_ok(self) -> bool:
        """The preseed folder and every folder above it."""
        try:
            if not self.permissions(self.preseed_dir, os.stat(self.root), "the preseed folder"):
                return False
            for parent in self.root.parents:
                if not self.permissions(
                    self.preseed_dir, os.stat(parent), f"folder {parent}", sticky_ok=True
                ):
                    return False
        except OSError as e:
            self.out.refused.append(
                Skipped(self.preseed_dir, f"cannot check: {e.strerror or e}", refused=True)
            )
            return False
        return True

    def inside(self, path: Path, what: str, report: Path) -> Path | None:
        """The real path of path if it stays inside the preseed folder; else refuse report."""
        real = path.resolve()
        if real != self.root and self.root not in real.parents:
            self.out.refused.append(
                Skipped(
                    report,
                    f"{what} is a symbolic link to {real}, outside the preseed folder {self.root}",
                    refused=True,
                )
            )
            return None
        return real

    def bundle(self, bundle: BundleFile, folders_ok: dict[str, bool]) -> bool:
        folder = self.root / bundle.namespace
        if bundle.namespace not in folders_ok:
            real = self.inside(folder, f"namespace folder {bundle.namespace}", bundle.path)
            if real is None:
                return False
            folders_ok[bundle.namespace] = self.permissions(
                bundle.path, os.stat(real), f"its folder {real}"
            )
            if not folders_ok[bundle.namespace]:
                return False
        elif not folders_ok[bundle.namespace]:
            self.out.refused.append(
                Skipped(bundle.path, f"its folder {folder} is not trusted; {HINT}", refused=True)
            )
            return False
        real = self.inside(bundle.path, "the bundle", bundle.path)
        if real is None:
            return False
        return self.permissions(bundle.path, os.stat(real), "the bundle")


def vet(
    preseed_dir: Path,
    bundles: list[BundleFile],
    allow_insecure: bool = False,
    manifest: Manifest | None = None,
) -> Vetted:
    """Split bundles into those that may be loaded and those refused, with one reason each."""
    vetter = _Vetter(preseed_dir, allow_insecure)
    out = vetter.out
    if not vetter.root_ok():
        return out
    folders_ok: dict[str, bool] = {}
    for bundle in bundles:
        try:
            if vetter.bundle(bundle, folders_ok):
                out.bundles.append(bundle)
        except OSError as e:
            reason = f"cannot check: {e.strerror or e}"
            out.refused.append(Skipped(bundle.path, reason, refused=True))
    if manifest is not None:
        out.bundles = _check_manifest(preseed_dir, bundles, out, manifest)
    return out


def _check_manifest(
    preseed_dir: Path, found: list[BundleFile], out: Vetted, manifest: Manifest
) -> list[BundleFile]:
    """Keep the bundles the manifest lists with their size, each with the sha256 to check when
    it is loaded (loader/verified.py); refuse the rest as tampering."""
    kept: list[BundleFile] = []
    for bundle in out.bundles:
        rel = f"{bundle.namespace}/{bundle.path.name}"
        entry = manifest.bundles.get(rel)
        if entry is None:
            reason = "tampering: the bundle is not in the manifest"
        else:
            try:
                size = bundle.path.stat().st_size
            except OSError as e:
                out.refused.append(
                    Skipped(bundle.path, f"cannot read: {e.strerror or e}", refused=True)
                )
                continue
            if size == entry.size:
                kept.append(replace(bundle, sha256=entry.sha256))
                continue
            reason = f"tampering: {size} bytes, the manifest says {entry.size}"
        out.refused.append(Skipped(bundle.path, reason, refused=True))
    present = {f"{b.namespace}/{b.path.name}" for b in found}
    for rel in sorted(set(manifest.bundles) - present):
        out.refused.append(
            Skipped(
                preseed_dir / rel,
                "tampering: the manifest lists this bundle but it is missing",
                refused=True,
            )
        )
    return kept
