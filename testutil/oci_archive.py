"""Build small OCI archive bundles (uncompressed tar of an OCI layout) for tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from loader.platforms import host

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

# A layer's files: path -> content, or path -> (content, mode).
Files = Mapping[str, bytes | tuple[bytes, int]]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else sha256(f"{out[-1]} {d}".encode()))
    return out


def layer_tar(files: Files) -> bytes:
    """A deterministic tar of files (parent directories added)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for path in sorted(files):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            value = files[path]
            data, mode = value if isinstance(value, tuple) else (value, 0o644)
            info = tarfile.TarInfo(path.strip("/"))
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class ImageSpec:
    """One image to put in an archive."""

    name: str
    layers: Sequence[Files]
    gzip: bool = True
    entrypoint: Sequence[str] | None = None
    architecture: str = field(default_factory=lambda: host().architecture)
    os: str = "linux"
    config_extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class BuiltImage:
    name: str
    manifest: dict[str, Any]
    manifest_digest: str
    manifest_size: int
    config_digest: str
    layer_digests: list[str]
    diff_ids: list[str]

    @property
    def chain_ids(self) -> list[str]:
        return chain_ids(self.diff_ids)


@dataclass
class BuiltArchive:
    path: Path
    images: list[BuiltImage]
    blobs: dict[str, bytes]

    def image(self, name: str) -> BuiltImage:
        return next(i for i in self.images if i.name == name)


def _tag(name: str) -> str:
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def build_archive(path: Path, images: Sequence[ImageSpec]) -> BuiltArchive:
    """Write an OCI archive with the given images; returns what it contains."""
    blobs: dict[str, bytes] = {}

    def add(data: bytes) -> tuple[str, int]:
        digest = sha256(data)
        blobs[digest] = data
        return digest, len(data)

    built: list[BuiltImage] = []
    manifests: list[dict[str, Any]] = []
    for spec in images:
        layer_descs: list[dict[str, Any]] = []
        diff_ids: list[str] = []
        for files in spec.layers:
            raw = layer_tar(files)
            diff_ids.append(sha256(raw))
            data = gzip.compress(raw, mtime=0) if spec.gzip else raw
            digest, size = add(data)
            layer_descs.append(
                {
                    "mediaType": OCI_LAYER_GZIP if spec.gzip else OCI_LAYER,
                    "digest": digest,
                    "size": size,
                }
            )
        config: dict[str, Any] = {
            "architecture": spec.architecture,
            "os": spec.os,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {"Entrypoint": list(spec.entrypoint)} if spec.entrypoint else {},
            **spec.config_extra,
        }
        config_digest, config_size = add(json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": layer_descs,
        }
        manifest_digest, manifest_size = add(json.dumps(manifest, sort_keys=True).encode())
        manifests.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {
                    "io.containerd.image.name": spec.name,
                    "org.opencontainers.image.ref.name": _tag(spec.name),
                },
                "platform": {"architecture": spec.architecture, "os": spec.os},
            }
        )
        built.append(
            BuiltImage(
                spec.name,
                manifests[-1],
                manifest_digest,
                manifest_size,
                config_digest,
                [d["digest"] for d in layer_descs],
                diff_ids,
            )
        )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    write_layout(path, index, blobs)
    return BuiltArchive(path, built, blobs)


def write_layout(
    path: Path,
    index: Mapping[str, Any] | None,
    blobs: Mapping[str, bytes],
    *,
    layout: bytes | None = b'{"imageLayoutVersion":"1.0.0"}',
    blob_names: Mapping[str, str] | None = None,
) -> None:
    """Write an OCI layout tar; blob_names overrides a blob's member name."""
    names = blob_names or {}
    with tarfile.open(path, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if layout is not None:
            _add(tar, "oci-layout", layout)
        if index is not None:
            _add(tar, "index.json", json.dumps(index, sort_keys=True).encode())
        for digest, data in blobs.items():
            default = "blobs/" + digest.replace(":", "/")
            _add(tar, names.get(digest, default), data)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def rewrite_blob(path: Path, digest: str, data: bytes) -> None:
    """Replace the bytes of blob member `digest` in an existing archive."""
    member_name = "blobs/" + digest.replace(":", "/")
    src = path.read_bytes()
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(src), mode="r:") as tin,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tout,
    ):
        for member in tin.getmembers():
            f = tin.extractfile(member)
            content = f.read() if f is not None else b""
            if member.name == member_name:
                content = data
            member.size = len(content)
            tout.addfile(member, io.BytesIO(content))
    path.write_bytes(out.getvalue())


def corrupt_blob(path: Path, digest: str) -> None:
    """Flip one byte of a blob, keeping its size (its name no longer matches)."""
    with tarfile.open(path, mode="r:") as tar:
        f = tar.extractfile("blobs/" + digest.replace(":", "/"))
        assert f is not None
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF
    rewrite_blob(path, digest, bytes(data))
