"""Build small OCI archive bundles (uncompressed tar of an OCI layout) for tests."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import zstandard

from loader.platforms import host

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

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
    compression: str | None = None  # "gzip", "zstd" or "" (none); overrides gzip
    docker_media_types: bool = False
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
        compression = spec.compression if spec.compression is not None else (
            "gzip" if spec.gzip else ""
        )
        for files in spec.layers:
            raw = layer_tar(files)
            diff_ids.append(sha256(raw))
            data = compress(raw, compression)
            digest, size = add(data)
            layer_descs.append(
                {
                    "mediaType": layer_media_type(compression, spec.docker_media_types),
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
        docker = spec.docker_media_types
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
            "config": {
                "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                "digest": config_digest,
                "size": config_size,
            },
            "layers": layer_descs,
        }
        manifest_digest, manifest_size = add(json.dumps(manifest, sort_keys=True).encode())
        manifests.append(
            {
                "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
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


def compress(raw: bytes, compression: str) -> bytes:
    """A layer's bytes: gzip, zstd or as is."""
    if compression == "gzip":
        return gzip.compress(raw, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(write_checksum=True).compress(raw)
    if compression == "":
        return raw
    raise ValueError(f"unknown compression {compression!r}")


def layer_media_type(compression: str, docker: bool = False) -> str:
    if docker:
        if compression == "zstd":
            raise ValueError("docker media types have no zstd layer")
        return DOCKER_LAYER_GZIP if compression == "gzip" else DOCKER_LAYER
    return {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "": OCI_LAYER}[compression]


def compress_file(src: Path, dest: Path, compression: str) -> Path:
    """A whole bundle compressed (gzip or zstd) as dest."""
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        if compression == "gzip":
            with gzip.GzipFile(fileobj=fout, mode="wb", mtime=0) as gz:
                shutil.copyfileobj(fin, gz)
        elif compression == "zstd":
            zstandard.ZstdCompressor(write_checksum=True).copy_stream(fin, fout)
        else:
            raise ValueError(f"unknown compression {compression!r}")
    return dest


def build_multi_platform(
    path: Path,
    name: str,
    platforms: Sequence[tuple[str, str]],
    *,
    absent: Sequence[tuple[str, str]] = (),
) -> tuple[str, dict[tuple[str, str], BuiltImage], dict[str, bytes]]:
    """An archive whose index.json names one image index of several platforms.

    Platforms in absent are listed in the image index but their blobs are left out, as in a
    partial archive. Returns (index digest, images by (os, arch), blobs written).
    """
    scratch = path.with_name(path.name + ".parts")
    scratch.mkdir(exist_ok=True)
    images: dict[tuple[str, str], BuiltImage] = {}
    blobs: dict[str, bytes] = {}
    children = []
    for os_name, arch in platforms:
        spec = ImageSpec(name, [{f"{arch}.txt": arch.encode()}], architecture=arch, os=os_name)
        built = build_archive(scratch / f"{arch}.tar", [spec])
        image = built.images[0]
        images[(os_name, arch)] = image
        children.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": image.manifest_digest,
                "size": image.manifest_size,
                "platform": {"architecture": arch, "os": os_name},
            }
        )
        if (os_name, arch) not in absent:
            blobs.update(built.blobs)
    shutil.rmtree(scratch)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
    index_bytes = index.encode()
    index_digest = sha256(index_bytes)
    blobs[index_digest] = index_bytes
    top = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_INDEX,
                "digest": index_digest,
                "size": len(index_bytes),
                "annotations": {"io.containerd.image.name": name},
            }
        ],
    }
    write_layout(path, top, blobs)
    return index_digest, images, blobs


def write_docker_save(path: Path, specs: Sequence[ImageSpec]) -> dict[str, Any]:
    """A docker archive in the layout of `docker save` (and rules_oci's oci_load tarball).

    Legacy entries: <id>/layer.tar (uncompressed), <id>/json, <id>/VERSION, <config hex>.json,
    manifest.json with RepoTags, and repositories. Returns what it wrote, by image name:
    {"config": digest, "diff_ids": [...], "chain_ids": [...]}.
    """
    entries: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    repositories: dict[str, dict[str, str]] = {}
    written: dict[str, Any] = {}
    for spec in specs:
        layers = [layer_tar(files_) for files_ in spec.layers]
        diff_ids = [sha256(raw) for raw in layers]
        config = {
            "architecture": spec.architecture,
            "os": spec.os,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {"Entrypoint": list(spec.entrypoint)} if spec.entrypoint else {},
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_hex = hashlib.sha256(config_bytes).hexdigest()
        files[f"{config_hex}.json"] = config_bytes
        layer_paths = []
        parent = ""
        for raw, chain in zip(layers, chain_ids(diff_ids)):
            layer_id = hashlib.sha256(f"{parent} {chain}".encode()).hexdigest()
            files[f"{layer_id}/layer.tar"] = raw
            files[f"{layer_id}/VERSION"] = b"1.0"
            legacy = {"id": layer_id, **({"parent": parent} if parent else {})}
            files[f"{layer_id}/json"] = json.dumps(legacy).encode()
            layer_paths.append(f"{layer_id}/layer.tar")
            parent = layer_id
        tags = [spec.name] if spec.name else []
        entries.append({"Config": f"{config_hex}.json", "RepoTags": tags, "Layers": layer_paths})
        if spec.name:
            repo, tag = spec.name.rsplit(":", 1)
            repositories.setdefault(repo, {})[tag] = parent
        written[spec.name] = {
            "config": f"sha256:{config_hex}",
            "diff_ids": diff_ids,
            "chain_ids": chain_ids(diff_ids),
        }
    files["manifest.json"] = json.dumps(entries).encode()
    files["repositories"] = json.dumps(repositories).encode()
    with tarfile.open(path, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({name.split("/")[0] for name in files if "/" in name})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name in sorted(files):
            _add(tar, name, files[name])
    return written


def write_oci_dir(directory: Path, specs: Sequence[ImageSpec]) -> BuiltArchive:
    """An OCI image layout directory (what skopeo and umoci read as oci:DIR)."""
    scratch = directory.with_name(directory.name + ".tar")
    built = build_archive(scratch, specs)
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(scratch) as tar:
        tar.extractall(directory)
    scratch.unlink()
    return built


def tar_dir(directory: Path, dest: Path) -> Path:
    """A tar of a directory's contents (names relative to it), e.g. an OCI layout."""
    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for root, dirnames, filenames in os.walk(directory):
            dirnames.sort()
            for fname in sorted(filenames):
                full = Path(root) / fname
                tar.add(full, arcname=str(full.relative_to(directory)), recursive=False)
    return dest


def run_tool(*argv: str) -> str:
    """Run an external tool; raise with its stderr if it fails."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return result.stdout
