"""Opens an image source as an OCI image layout directory.

A source is an OCI layout directory, or a tarball (uncompressed, gzip or
zstd) holding an OCI layout (an OCI archive) or a docker archive (as written
by `docker save`: manifest.json, configs and layer tars). Archives are
extracted into a work directory; a docker archive is rewritten there as an
OCI layout whose index names each image by its RepoTags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath
import shutil
import tarfile
from typing import Any

from rules.private.tools import common, compression, reference, tarwriter

ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST_LIST = ("application/vnd.docker.distribution.manifest."
                        "list.v2+json")
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (MEDIA_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_TYPES = (MEDIA_MANIFEST, DOCKER_MANIFEST)
LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}

# Docker layer media types and their OCI equivalents (same bytes).
DOCKER_LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip":
        compression.LAYER_MEDIA_TYPES["gzip"],
    "application/vnd.docker.image.rootfs.diff.tar":
        compression.LAYER_MEDIA_TYPES["none"],
}


@dataclasses.dataclass
class Layout:
    """An OCI layout directory and the image names its index carries."""

    path: str
    index: dict
    names: list[str]


def blob_path(layout: str, digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    if algorithm != "sha256" or len(hex_digest) != 64 or not all(
            c in "0123456789abcdef" for c in hex_digest):
        raise ValueError(f"layout {layout}: unsupported or invalid digest "
                         f"{digest!r}")
    return os.path.join(layout, "blobs", "sha256", hex_digest)


def load_blob_json(layout: str, desc: Any) -> dict:
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
        raise ValueError(f"layout {layout}: malformed descriptor {desc!r}")
    doc = common.load_json(blob_path(layout, desc["digest"]))
    if not isinstance(doc, dict):
        raise ValueError(f"layout {layout}: blob {desc['digest']} is not a "
                         "JSON object")
    return doc


def descriptor_names(desc: dict) -> list[str]:
    """The image names a descriptor of an archive's index carries."""
    annotations = desc.get("annotations") or {}
    name = annotations.get(ANNOTATION_IMAGE_NAME)
    if not name:
        ref = annotations.get(ANNOTATION_REF_NAME, "")
        # A bare tag is no name; a full reference is.
        name = ref if "/" in ref else ""
    return [reference.normalize(name)] if name else []


def read_layout(path: str) -> Layout:
    marker = common.load_json(os.path.join(path, "oci-layout"))
    if not isinstance(marker, dict) or "imageLayoutVersion" not in marker:
        raise ValueError(f"layout {path}: oci-layout has no "
                         "imageLayoutVersion")
    index_path = os.path.join(path, "index.json")
    index = common.load_json(index_path)
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not manifests or not all(
            isinstance(m, dict) for m in manifests):
        raise ValueError(f"file {index_path}: no image descriptors")
    names: list[str] = []
    for desc in manifests:
        for name in descriptor_names(desc):
            if name not in names:
                names.append(name)
    return Layout(path, index, names)


def _extract(archive: str, dest: str) -> None:
    """Extracts regular files, directories and in-archive symlinks safely."""
    links: dict[str, str] = {}
    for member, data in tarwriter.iter_tar(archive):
        name = tarwriter.clean_name(member.name)
        target = os.path.join(dest, *name.split("/"))
        if member.isdir():
            os.makedirs(target, exist_ok=True)
        elif member.isfile():
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(data or b"")
        elif member.issym() or member.islnk():
            base = "" if member.islnk() else posixpath.dirname(name)
            links[name] = posixpath.normpath(
                posixpath.join(base, member.linkname))
        else:
            raise ValueError(f"file {archive}: member {member.name!r} has an "
                             "unsupported type")
    for name, linked in sorted(links.items()):
        source = os.path.join(dest, *linked.split("/"))
        if linked.startswith("../") or not os.path.isfile(source):
            raise ValueError(f"file {archive}: link {name!r} does not point "
                             "to a file of the archive")
        target = os.path.join(dest, *name.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)


def _write_json_blob(blobs: str, obj: Any, media_type: str) -> dict:
    data = common.canonical_json(obj)
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return {"mediaType": media_type, "digest": "sha256:" + digest,
            "size": len(data)}


def _move_blob(blobs: str, src: str, cache: dict[str, tuple[str, int]]
               ) -> tuple[str, int]:
    if src in cache:
        return cache[src]
    sha, size = hashlib.sha256(), 0
    with open(src, "rb") as f:
        while chunk := f.read(tarwriter.CHUNK_SIZE):
            sha.update(chunk)
            size += len(chunk)
    digest = sha.hexdigest()
    shutil.copyfile(src, os.path.join(blobs, digest))
    cache[src] = ("sha256:" + digest, size)
    return cache[src]


def docker_to_oci(root: str, archive: str) -> None:
    """Rewrites an extracted docker archive in root as an OCI layout."""
    manifest_path = os.path.join(root, "manifest.json")
    entries = common.load_json(manifest_path)
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"file {archive}: manifest.json lists no images")
    blobs = os.path.join(root, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    cache: dict[str, tuple[str, int]] = {}
    descriptors = []
    for i, entry in enumerate(entries):
        where = f"file {archive}: manifest.json[{i}]"
        common.check_keys(entry, where, ("Config", "Layers"),
                          ("RepoTags", "LayerSources"))
        paths = [entry["Config"]] + list(entry["Layers"])
        files = []
        for p in paths:
            if not isinstance(p, str):
                raise ValueError(f"{where}: paths must be strings")
            path = os.path.join(root, *tarwriter.clean_name(p).split("/"))
            if not os.path.isfile(path):
                raise ValueError(f"{where}: {p!r} is not in the archive")
            files.append(path)
        config_digest, config_size = _move_blob(blobs, files[0], cache)
        config = common.load_json(files[0])
        if not isinstance(config, dict):
            raise ValueError(f"{where}: config is not a JSON object")
        layers = []
        for path in files[1:]:
            digest, size = _move_blob(blobs, path, cache)
            kind = compression.detect_file(path)
            layers.append({"mediaType": compression.LAYER_MEDIA_TYPES[kind],
                           "digest": digest, "size": size})
        manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                    "config": {"mediaType": MEDIA_CONFIG,
                               "digest": config_digest, "size": config_size},
                    "layers": layers}
        desc = _write_json_blob(blobs, manifest, MEDIA_MANIFEST)
        platform = {k: config[k] for k in ("architecture", "os", "variant")
                    if isinstance(config.get(k), str) and config[k]}
        if platform:
            desc["platform"] = platform
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list):
            raise ValueError(f"{where}: RepoTags must be a list")
        if not tags:
            descriptors.append(desc)
        for tag in tags:
            name = reference.normalize(tag)
            descriptors.append(dict(desc, annotations={
                ANNOTATION_IMAGE_NAME: name,
                ANNOTATION_REF_NAME: reference.tag_of(name)}))
    with open(os.path.join(root, "oci-layout"), "wb") as f:
        f.write(common.canonical_json(LAYOUT_FILE))
    with open(os.path.join(root, "index.json"), "wb") as f:
        f.write(common.canonical_json({"schemaVersion": 2,
                                       "mediaType": MEDIA_INDEX,
                                       "manifests": descriptors}))


def open_source(src: str, workdir: str) -> Layout:
    """Returns src as an OCI layout, extracting archives into workdir."""
    if os.path.isdir(src):
        return read_layout(src)
    if not os.path.isfile(src):
        raise ValueError(f"file {src}: no such image source")
    root = os.path.join(workdir, "layout")
    os.makedirs(root)
    try:
        _extract(src, root)
    except tarfile.TarError as e:
        raise ValueError(f"file {src}: not a valid tarball: {e}") from None
    if os.path.isfile(os.path.join(root, "oci-layout")):
        return read_layout(root)
    if os.path.isfile(os.path.join(root, "manifest.json")):
        docker_to_oci(root, src)
        return read_layout(root)
    raise ValueError(f"file {src}: neither an OCI archive (no oci-layout) "
                     "nor a docker archive (no manifest.json)")


def matches(platform: dict, os_name: str, architecture: str,
            variant: str) -> bool:
    return (platform.get("os") == os_name
            and platform.get("architecture") == architecture
            and (not variant or platform.get("variant", "") == variant))


def find_manifest(layout: Layout, os_name: str, architecture: str,
                  variant: str = "") -> dict:
    """The descriptor of the layout's image manifest for a platform."""
    candidates: list[dict] = []

    def walk(descs: list) -> None:
        for desc in descs:
            media_type = desc.get("mediaType")
            if media_type in INDEX_TYPES:
                walk(load_blob_json(layout.path, desc).get("manifests", []))
            elif media_type in MANIFEST_TYPES:
                candidates.append(desc)

    walk(layout.index["manifests"])
    for desc in candidates:
        platform = desc.get("platform")
        if platform is None:
            manifest = load_blob_json(layout.path, desc)
            config = load_blob_json(layout.path, manifest.get("config"))
            platform = config
        if matches(platform, os_name, architecture, variant):
            return desc
    wanted = "/".join(p for p in (os_name, architecture, variant) if p)
    raise ValueError(f"layout {layout.path}: no image for platform {wanted}")
