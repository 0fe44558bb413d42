"""Writes an OCI image layout directory holding one image.

Usage: oci_layout.py --spec SPEC.json --output DIR

The image is the base image's layers (if "base" is set: an OCI layout
directory, or an OCI or docker archive), then one layer per tarball in
"layers", then one layer of "files" and "entries" (see entries.py). Layers
are written with "compression" ("gzip", "zstd" or "none"). Config fields
that are set replace the base's; env, labels and exposed ports are merged
into the base's; setting an entrypoint without a cmd clears the base's cmd.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tarfile
import tempfile
from typing import Any, BinaryIO, Sequence

from rules.private.tools import (common, compression, entries, imagesrc,
                                 tarwriter)

EPOCH = "1970-01-01T00:00:00Z"
CREATED_BY = "preseed oci_image"

MEDIA_INDEX = imagesrc.MEDIA_INDEX
MEDIA_MANIFEST = imagesrc.MEDIA_MANIFEST
MEDIA_CONFIG = imagesrc.MEDIA_CONFIG
MEDIA_LAYER = compression.LAYER_MEDIA_TYPES["gzip"]
LAYOUT_FILE = imagesrc.LAYOUT_FILE

_OPTIONAL_KEYS = ("files", "entries", "entrypoint", "cmd", "env", "workdir",
                  "user", "labels", "annotations", "variant", "base",
                  "layers", "compression", "exposed_ports")


class _HashingWriter:
    """Passes writes through to out while hashing and counting them."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


def _strings(spec: dict, key: str) -> list[str]:
    value = spec.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"spec: {key!r} must be a list of strings")
    return value


def _string(spec: dict, key: str) -> str:
    value = spec.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"spec: {key!r} must be a string")
    return value


def _string_map(spec: dict, key: str) -> dict[str, str]:
    value = spec.get(key, {})
    if not isinstance(value, dict) or not all(
            isinstance(v, str) for v in value.values()):
        raise ValueError(f"spec: {key!r} must map strings to strings")
    return value


def port_key(port: str) -> str:
    """Normalizes an exposed port: "8080" -> "8080/tcp"."""
    number, _, protocol = port.partition("/")
    protocol = protocol or "tcp"
    if (not number.isdigit() or not 0 < int(number) < 65536
            or protocol not in ("tcp", "udp", "sctp")):
        raise ValueError(f"spec: invalid exposed port {port!r}; use "
                         "\"<port>[/tcp|udp|sctp]\"")
    return f"{int(number)}/{protocol}"


def validate_spec(spec: Any) -> dict:
    """Checks the spec's shape; returns it."""
    common.check_keys(spec, "spec", ("os", "architecture"), _OPTIONAL_KEYS)
    for key in ("os", "architecture", "variant", "workdir", "user", "base"):
        _string(spec, key)
    if not spec["os"] or not spec["architecture"]:
        raise ValueError("spec: 'os' and 'architecture' must not be empty")
    for key in ("entrypoint", "cmd", "layers", "exposed_ports"):
        _strings(spec, key)
    for key in ("env", "labels", "annotations"):
        _string_map(spec, key)
    for name in _string_map(spec, "env"):
        if not name or "=" in name:
            raise ValueError(f"spec: invalid environment variable name {name!r}")
    for port in _strings(spec, "exposed_ports"):
        port_key(port)
    compression.check_kind(spec.get("compression", "gzip"))
    for key in ("files", "entries"):
        if not isinstance(spec.get(key, []), list):
            raise ValueError(f"spec: {key!r} must be a list")
    for i, f in enumerate(spec.get("files", [])):
        where = f"spec: files[{i}]"
        common.check_keys(f, where, ("src", "dest"), ("mode",))
        if not isinstance(f["src"], str) or not isinstance(f["dest"], str):
            raise ValueError(f"{where}: 'src' and 'dest' must be strings")
        if "mode" in f:
            common.parse_mode(f["mode"], where)
    return spec


def add_files(writer: tarwriter.TarWriter, files: list[dict]) -> None:
    """Adds spec "files" entries; a directory src is added recursively."""
    entries.add_entries(writer, files, "spec: files")


def write_blob(blobs_dir: str, data: bytes, media_type: str) -> dict:
    """Stores data under its digest; returns its descriptor."""
    hex_digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs_dir, hex_digest), "wb") as f:
        f.write(data)
    return {"mediaType": media_type, "digest": "sha256:" + hex_digest,
            "size": len(data)}


def _write_compressed_blob(blobs_dir: str, kind: str, fill) -> tuple[dict, str]:
    """Writes a layer blob; fill(writer) writes its uncompressed tar."""
    fd, tmp = tempfile.mkstemp(prefix=".layer-", dir=blobs_dir)
    try:
        with os.fdopen(fd, "wb") as raw:
            compressed = _HashingWriter(raw)
            with compression.open_writer(compressed, kind) as out:
                uncompressed = _HashingWriter(out)
                fill(uncompressed)
        os.replace(tmp, os.path.join(blobs_dir, compressed.sha256.hexdigest()))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    desc = {"mediaType": compression.LAYER_MEDIA_TYPES[kind],
            "digest": compressed.digest, "size": compressed.size}
    return desc, uncompressed.digest


def write_layer(blobs_dir: str, items: list[dict],
                kind: str = "gzip") -> tuple[dict, str]:
    """Writes a layer of spec entries; returns its descriptor and diff_id."""
    def fill(out: BinaryIO) -> None:
        writer = tarwriter.TarWriter(out)
        entries.add_entries(writer, items, "spec: entries")
        writer.close()
    return _write_compressed_blob(blobs_dir, kind, fill)


def copy_layer(blobs_dir: str, src: str, kind: str) -> tuple[dict, str]:
    """Re-encodes an existing tarball as a layer; checks it is a tarball."""
    try:
        with compression.open_reader(src) as reader:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for _ in tar:
                    pass
    except (tarfile.TarError, EOFError, OSError) as e:
        if isinstance(e, OSError) and e.filename:
            raise
        raise ValueError(f"file {src}: not a valid tarball: {e}") from None

    def fill(out: BinaryIO) -> None:
        with compression.open_reader(src) as reader:
            while chunk := reader.read(tarwriter.CHUNK_SIZE):
                out.write(chunk)
    return _write_compressed_blob(blobs_dir, kind, fill)


def _base(spec: dict, workdir: str, blobs_dir: str) -> tuple[dict, list[dict]]:
    """The base image's config and layer descriptors (blobs copied)."""
    if not spec.get("base"):
        return {}, []
    layout = imagesrc.open_source(spec["base"], workdir)
    desc = imagesrc.find_manifest(layout, spec["os"], spec["architecture"],
                                  spec.get("variant", ""))
    manifest = imagesrc.load_blob_json(layout.path, desc)
    config = imagesrc.load_blob_json(layout.path, manifest.get("config"))
    layers = []
    for layer in manifest.get("layers", []):
        media_type = imagesrc.DOCKER_LAYER_TYPES.get(layer.get("mediaType"),
                                                     layer.get("mediaType"))
        path = imagesrc.blob_path(layout.path, layer["digest"])
        shutil.copyfile(path, os.path.join(blobs_dir,
                                           os.path.basename(path)))
        layers.append({"mediaType": media_type, "digest": layer["digest"],
                       "size": layer["size"]})
    return config, layers


def image_config(spec: dict, diff_ids: list[str],
                 base: dict | None = None) -> dict:
    """Returns the OCI image config: the base's, updated by the spec."""
    config = dict(base or {})
    container = dict(config.get("config") or {})
    if spec.get("env"):
        env = {}
        for item in container.get("Env") or []:
            key, _, value = item.partition("=")
            env[key] = value
        env.update(spec["env"])
        container["Env"] = [f"{k}={env[k]}" for k in sorted(env)]
    if spec.get("entrypoint"):
        container["Entrypoint"] = spec["entrypoint"]
        container.pop("Cmd", None)
    if spec.get("cmd"):
        container["Cmd"] = spec["cmd"]
    for key, field in (("workdir", "WorkingDir"), ("user", "User")):
        if spec.get(key):
            container[field] = spec[key]
    if spec.get("labels"):
        container["Labels"] = dict(container.get("Labels") or {},
                                   **spec["labels"])
    if spec.get("exposed_ports"):
        ports = dict(container.get("ExposedPorts") or {})
        ports.update({port_key(p): {} for p in spec["exposed_ports"]})
        container["ExposedPorts"] = ports
    config.update({
        "created": EPOCH,
        "architecture": spec["architecture"],
        "os": spec["os"],
        "config": {k: v for k, v in container.items() if v},
    })
    base_diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    config["rootfs"] = {"type": "layers", "diff_ids": base_diff_ids + diff_ids}
    history = list(config.get("history") or [])
    history += [{"created": EPOCH, "created_by": CREATED_BY}
                for _ in diff_ids]
    config["history"] = history
    if spec.get("variant"):
        config["variant"] = spec["variant"]
    for key in ("container", "container_config", "docker_version", "id",
                "parent"):
        config.pop(key, None)
    return config


def build_layout(spec: dict, output: str) -> dict:
    """Writes the layout to output; returns the manifest descriptor."""
    validate_spec(spec)
    blobs_dir = os.path.join(output, "blobs", "sha256")
    os.makedirs(blobs_dir, exist_ok=True)
    kind = spec.get("compression", "gzip")
    with tempfile.TemporaryDirectory(prefix=".base-", dir=output) as work:
        base_config, layers = _base(spec, work, blobs_dir)
    diff_ids = []
    for src in spec.get("layers", []):
        desc, diff_id = copy_layer(blobs_dir, src, kind)
        layers.append(desc)
        diff_ids.append(diff_id)
    own = list(spec.get("files", [])) + list(spec.get("entries", []))
    if own or not layers:
        desc, diff_id = write_layer(blobs_dir, own, kind)
        layers.append(desc)
        diff_ids.append(diff_id)
    config_obj = image_config(spec, diff_ids, base_config)
    if not config_obj["config"].get("Entrypoint") and not config_obj[
            "config"].get("Cmd"):
        raise ValueError("the image has no entrypoint or cmd: set one, or "
                         "use a base image that has one")
    config = write_blob(blobs_dir, common.canonical_json(config_obj),
                        MEDIA_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                "config": config, "layers": layers}
    if spec.get("annotations"):
        manifest["annotations"] = spec["annotations"]
    desc = write_blob(blobs_dir, common.canonical_json(manifest),
                      MEDIA_MANIFEST)
    platform = {"architecture": spec["architecture"], "os": spec["os"]}
    if spec.get("variant"):
        platform["variant"] = spec["variant"]
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX,
             "manifests": [dict(desc, platform=platform)]}
    with open(os.path.join(output, "oci-layout"), "wb") as f:
        f.write(common.canonical_json(LAYOUT_FILE))
    with open(os.path.join(output, "index.json"), "wb") as f:
        f.write(common.canonical_json(index))
    return desc


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="oci_layout", description="Write an OCI image layout directory.")
    parser.add_argument("--spec", required=True, help="image spec JSON file")
    parser.add_argument("--output", required=True, help="layout directory")
    args = parser.parse_args(argv)
    build_layout(common.load_json(args.spec), args.output)


if __name__ == "__main__":
    common.run("oci_layout", main)
