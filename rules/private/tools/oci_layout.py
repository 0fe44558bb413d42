"""Writes an OCI image layout directory with a single-layer image.

The image always has exactly one gzip layer; with no files it is an empty
tar. Usage: oci_layout.py --spec SPEC.json --output DIR
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from typing import Any, BinaryIO, Sequence

from rules.private.tools import common, tarwriter

EPOCH = "1970-01-01T00:00:00Z"
CREATED_BY = "preseed oci_image"

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}

_OPTIONAL_KEYS = ("files", "entrypoint", "cmd", "env", "workdir", "user",
                  "labels", "annotations", "variant")


class _HashingWriter:
    """Passes writes through to out while hashing and counting them."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.out.write(data)

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


def validate_spec(spec: Any) -> dict:
    """Checks the spec's shape; returns it."""
    common.check_keys(spec, "spec", ("os", "architecture"), _OPTIONAL_KEYS)
    for key in ("os", "architecture", "variant", "workdir", "user"):
        _string(spec, key)
    if not spec["os"] or not spec["architecture"]:
        raise ValueError("spec: 'os' and 'architecture' must not be empty")
    for key in ("entrypoint", "cmd"):
        _strings(spec, key)
    for key in ("env", "labels", "annotations"):
        _string_map(spec, key)
    for name in _string_map(spec, "env"):
        if not name or "=" in name:
            raise ValueError(f"spec: invalid environment variable name {name!r}")
    files = spec.get("files", [])
    if not isinstance(files, list):
        raise ValueError("spec: 'files' must be a list")
    for i, f in enumerate(files):
        where = f"spec: files[{i}]"
        common.check_keys(f, where, ("src", "dest"), ("mode",))
        if not isinstance(f["src"], str) or not isinstance(f["dest"], str):
            raise ValueError(f"{where}: 'src' and 'dest' must be strings")
        if "mode" in f:
            common.parse_mode(f["mode"], where)
    return spec


def add_files(writer: tarwriter.TarWriter, files: list[dict]) -> None:
    """Adds spec "files" entries; a directory src is added recursively."""
    for i, f in enumerate(files):
        where = f"spec: files[{i}]"
        src, dest = f["src"], tarwriter.clean_name(f["dest"])
        if os.path.isdir(src):
            if "mode" in f:
                raise ValueError(f"{where}: 'mode' is not allowed when "
                                 f"src {src} is a directory")
            writer.add_tree(dest, src)
            continue
        if "mode" in f:
            mode = common.parse_mode(f["mode"], where)
        else:
            mode = 0o755 if os.stat(src).st_mode & 0o111 else 0o644
        writer.add_file(dest, src, mode)


def write_blob(blobs_dir: str, data: bytes, media_type: str) -> dict:
    """Stores data under its digest; returns its descriptor."""
    hex_digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs_dir, hex_digest), "wb") as f:
        f.write(data)
    return {"mediaType": media_type, "digest": "sha256:" + hex_digest,
            "size": len(data)}


def write_layer(blobs_dir: str, files: list[dict]) -> tuple[dict, str]:
    """Writes the gzip layer; returns its descriptor and its diff_id."""
    fd, tmp = tempfile.mkstemp(prefix=".layer-", dir=blobs_dir)
    try:
        with os.fdopen(fd, "wb") as raw:
            compressed = _HashingWriter(raw)
            with tarwriter.open_gzip(compressed) as gz:
                uncompressed = _HashingWriter(gz)
                writer = tarwriter.TarWriter(uncompressed)
                add_files(writer, files)
                writer.close()
        os.replace(tmp, os.path.join(blobs_dir, compressed.sha256.hexdigest()))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    desc = {"mediaType": MEDIA_LAYER, "digest": compressed.digest,
            "size": compressed.size}
    return desc, uncompressed.digest


def image_config(spec: dict, diff_id: str) -> dict:
    """Returns the OCI image config; empty fields are left out."""
    env = spec.get("env", {})
    container = {
        "Env": [f"{k}={env[k]}" for k in sorted(env)],
        "Entrypoint": spec.get("entrypoint", []),
        "Cmd": spec.get("cmd", []),
        "WorkingDir": spec.get("workdir", ""),
        "User": spec.get("user", ""),
        "Labels": spec.get("labels", {}),
    }
    config = {
        "created": EPOCH,
        "architecture": spec["architecture"],
        "os": spec["os"],
        "config": {k: v for k, v in container.items() if v},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": EPOCH, "created_by": CREATED_BY}],
    }
    if spec.get("variant"):
        config["variant"] = spec["variant"]
    return config


def build_layout(spec: dict, output: str) -> dict:
    """Writes the layout to output; returns the manifest descriptor."""
    validate_spec(spec)
    blobs_dir = os.path.join(output, "blobs", "sha256")
    os.makedirs(blobs_dir, exist_ok=True)
    layer, diff_id = write_layer(blobs_dir, spec.get("files", []))
    config = write_blob(blobs_dir, common.canonical_json(
        image_config(spec, diff_id)), MEDIA_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                "config": config, "layers": [layer]}
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
