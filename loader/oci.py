"""OCI and containerd conventions: media types, digests, chain IDs, GC labels."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_PREFIX = "application/vnd.oci.image.layer."
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYERS = frozenset(
    {
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)

ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

LABEL_GC_EXPIRE = "containerd.io/gc.expire"
LABEL_GC_CONFIG = "containerd.io/gc.ref.content.config"
LABEL_GC_LAYER = "containerd.io/gc.ref.content.l."
LABEL_GC_MANIFEST = "containerd.io/gc.ref.content.m."
LABEL_GC_OTHER = "containerd.io/gc.ref.content."
LABEL_GC_SNAPSHOT = "containerd.io/gc.ref.snapshot."
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"
LABEL_SNAPSHOT_REF = "containerd.io/snapshot.ref"
INHERITED_SNAPSHOT_PREFIX = "containerd.io/snapshot/"

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Mapping[str, str] | None = None


def is_index(media_type: str) -> bool:
    return media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST)


def is_manifest(media_type: str) -> bool:
    return media_type in (OCI_MANIFEST, DOCKER_MANIFEST)


def is_config(media_type: str) -> bool:
    return media_type in (OCI_CONFIG, DOCKER_CONFIG)


def is_layer(media_type: str) -> bool:
    if media_type.startswith(OCI_LAYER_PREFIX):
        return True
    return media_type.split("+", 1)[0] in DOCKER_LAYERS


def is_encrypted_layer(media_type: str) -> bool:
    return is_layer(media_type) and media_type.endswith("+encrypted")


def valid_digest(value: object) -> bool:
    """True for a lowercase sha256 digest string."""
    return isinstance(value, str) and bool(_DIGEST_RE.match(value))


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """ChainIDs for each layer prefix of diff_ids, per the OCI image spec."""
    chain: list[str] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
        else:
            chain.append(sha256_digest(f"{chain[-1]} {diff_id}".encode()))
    return chain


def child_gc_labels(children: Iterable[Descriptor]) -> dict[str, str]:
    """Labels a parent blob carries so containerd's GC keeps its children."""
    labels: dict[str, str] = {}
    counters: dict[str, int] = {}
    for child in children:
        if is_config(child.media_type):
            key = LABEL_GC_CONFIG
        elif is_manifest(child.media_type):
            key = LABEL_GC_MANIFEST
        elif is_layer(child.media_type):
            key = LABEL_GC_LAYER
        else:
            key = LABEL_GC_OTHER
        index = counters.get(key, 0)
        counters[key] = index + 1
        if index > 0 or key.endswith("."):
            labels[f"{key}{index}"] = child.digest
        else:
            labels[key] = child.digest
    return labels


def snapshot_gc_label(snapshotter: str) -> str:
    return f"{LABEL_GC_SNAPSHOT}{snapshotter}"
