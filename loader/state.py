"""Our labels on image records, and the second-boot check: is a bundle already in containerd?"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from loader import oci
from loader.api import images_pb2, snapshots_pb2
from loader.archive import compression_of, normalize
from loader.client import Client

LABEL_BUNDLE = "preseed.dev/bundle"
LABEL_FINGERPRINT = "preseed.dev/fingerprint"
LABEL_IMAGES = "preseed.dev/images"
LABEL_UNPACKED = "preseed.dev/unpacked"
LABEL_PINNED = "io.cri-containerd.pinned"
PINNED = "pinned"
PIN_NAMESPACE = "k8s.io"

_EDGE = 64 << 10
_META_MEMBERS = ("index.json", "manifest.json")


def fingerprint(path: Path, variant: str) -> str:
    """A cheap fingerprint of a bundle file: size, mtime and a digest of its metadata.

    For an uncompressed tar the digest covers index.json (or manifest.json), which names
    every manifest by digest; for a compressed bundle it covers the first and last 64 KiB
    of the file (a gzip or zstd trailer carries a checksum of the whole content). variant
    names what else shapes the import (platforms). Reads tar headers only, never the blobs.
    """
    st = os.stat(path)
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        head = f.read(_EDGE)
        if compression_of(head):
            hasher.update(head)
            f.seek(max(0, st.st_size - _EDGE))
            hasher.update(f.read(_EDGE))
        else:
            hasher.update(_tar_metadata(path))
    return f"v1:{st.st_size}:{st.st_mtime_ns}:{hasher.hexdigest()[:32]}:{variant}"


def _tar_metadata(path: Path) -> bytes:
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if info.isfile() and normalize(info.name) in _META_MEMBERS:
                    f = tar.extractfile(info)
                    if f is not None and info.size <= (16 << 20):
                        return normalize(info.name).encode() + b"\0" + f.read()
    except (tarfile.TarError, OSError, EOFError):
        pass
    return b"unreadable"


def our_labels(
    namespace: str,
    file_name: str,
    fp: str,
    count: int,
    unpacked: str,
    pin: bool,
) -> dict[str, str]:
    labels = {
        LABEL_BUNDLE: file_name,
        LABEL_FINGERPRINT: fp,
        LABEL_IMAGES: str(count),
        LABEL_UNPACKED: unpacked,
    }
    if pin and namespace == PIN_NAMESPACE:
        labels[LABEL_PINNED] = PINNED
    return labels


@dataclass(frozen=True)
class Current:
    """A bundle found complete in containerd."""

    images: list[images_pb2.Image]
    missing_pins: list[str]


def check_current(
    client: Client,
    images: Sequence[images_pb2.Image],
    file_name: str,
    fp: str,
    snapshotter: str,
    pin: bool,
) -> Current | None:
    """The bundle's images if containerd holds all of it as our last import left it.

    Checks, in containerd's own state: every image record of the bundle (count, fingerprint),
    the content Info of every blob reachable through the GC labels from each target, and
    the committed snapshot of the top chain ID named by the unpacked config's GC label.
    """
    mine = [i for i in images if i.labels.get(LABEL_BUNDLE) == file_name]
    if not mine:
        return None
    for image in mine:
        if image.labels.get(LABEL_FINGERPRINT) != fp:
            return None
        if image.labels.get(LABEL_IMAGES) != str(len(mine)):
            return None
    infos: dict[str, Mapping[str, str] | None] = {}

    def info(digest: str) -> Mapping[str, str] | None:
        if digest not in infos:
            found = client.content_info(digest)
            infos[digest] = dict(found.labels) if found is not None else None
        return infos[digest]

    def complete(digest: str) -> bool:
        todo, seen = [digest], set()
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            labels = info(current)
            if labels is None:
                return False
            todo += [v for k, v in labels.items() if k.startswith(oci.LABEL_GC_OTHER)]
        return True

    snapshot_label = oci.snapshot_gc_label(snapshotter)
    for image in mine:
        if not complete(image.target.digest):
            return None
        unpacked = image.labels.get(LABEL_UNPACKED, "")
        if not unpacked:
            return None
        manifest = info(unpacked)
        if manifest is None:
            return None
        if not any(k.startswith(oci.LABEL_GC_LAYER) for k in manifest):
            continue  # no layers, nothing to unpack
        config_digest = manifest.get(oci.LABEL_GC_CONFIG, "")
        config = info(config_digest) if config_digest else None
        chain_id = config.get(snapshot_label) if config else None
        if not chain_id:
            return None
        snap = client.snapshot_stat(snapshotter, chain_id)
        if snap is None or snap.kind != snapshots_pb2.COMMITTED:
            return None
    missing = [
        i.name
        for i in mine
        if pin and client.namespace == PIN_NAMESPACE and i.labels.get(LABEL_PINNED) != PINNED
    ]
    return Current(sorted(mine, key=lambda i: i.name), missing)
