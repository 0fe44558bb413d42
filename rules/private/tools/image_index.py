"""Writes an OCI layout holding an image index of several single-image layouts.

Usage: image_index.py --layout DIR [--layout DIR ...] --output DIR
                      [--annotation KEY=VALUE ...]

Each input layout must hold one image manifest with a platform (as
oci_image writes it); the index lists them in the given order.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
from typing import Sequence

from rules.private.tools import common, imagesrc


def _platform_key(platform: dict) -> str:
    return "/".join(platform.get(k, "") for k in ("os", "architecture",
                                                   "variant")).rstrip("/")


def build_index(layouts: Sequence[str], output: str,
                annotations: dict[str, str] | None = None) -> dict:
    """Writes the index layout; returns the index descriptor."""
    if not layouts:
        raise ValueError("an image index needs at least one image")
    blobs = os.path.join(output, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    manifests, seen = [], {}
    for path in layouts:
        layout = imagesrc.read_layout(path)
        descs = layout.index["manifests"]
        if len(descs) != 1 or descs[0].get("mediaType") not in \
                imagesrc.MANIFEST_TYPES:
            raise ValueError(f"layout {path}: expected one image manifest")
        desc = descs[0]
        platform = desc.get("platform")
        if not isinstance(platform, dict):
            raise ValueError(f"layout {path}: the manifest descriptor has no "
                             "platform")
        key = _platform_key(platform)
        if key in seen:
            raise ValueError(f"layout {path}: platform {key} is also the "
                             f"platform of {seen[key]}")
        seen[key] = path
        for name in os.listdir(os.path.join(path, "blobs", "sha256")):
            shutil.copyfile(os.path.join(path, "blobs", "sha256", name),
                            os.path.join(blobs, name))
        manifests.append({k: desc[k] for k in ("mediaType", "digest", "size",
                                                "platform")})
    index = {"schemaVersion": 2, "mediaType": imagesrc.MEDIA_INDEX,
             "manifests": manifests}
    if annotations:
        index["annotations"] = dict(annotations)
    data = common.canonical_json(index)
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    desc = {"mediaType": imagesrc.MEDIA_INDEX, "digest": "sha256:" + digest,
            "size": len(data)}
    with open(os.path.join(output, "oci-layout"), "wb") as f:
        f.write(common.canonical_json(imagesrc.LAYOUT_FILE))
    with open(os.path.join(output, "index.json"), "wb") as f:
        f.write(common.canonical_json({"schemaVersion": 2,
                                       "mediaType": imagesrc.MEDIA_INDEX,
                                       "manifests": [desc]}))
    return desc


def _annotation(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key, val


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="image_index", description="Write an OCI image index layout.")
    parser.add_argument("--layout", action="append", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--annotation", action="append", type=_annotation,
                        default=[])
    args = parser.parse_args(argv)
    build_index(args.layout, args.output, dict(args.annotation))


if __name__ == "__main__":
    common.run("image_index", main)
