"""Packs an image into a preseed bundle (an OCI archive tar).

The archive's index.json names the image once per reference, the way
`ctr images export` does. Usage:
bundle.py --image SRC [--name REF ...] --output BUNDLE [--compression KIND]
          [--metadata META.json]

SRC is an OCI layout directory or an OCI or docker archive (see
imagesrc.py). With --name, SRC must hold one image and the bundle names it
so; without, the bundle keeps the names SRC carries (a docker archive's
RepoTags, an OCI archive's io.containerd.image.name annotations). The
metadata file records the bundle's names as {"names": [...]}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import tempfile
from typing import Sequence

from rules.private.tools import (common, compression, imagesrc, reference,
                                 tarwriter)

ANNOTATION_IMAGE_NAME = imagesrc.ANNOTATION_IMAGE_NAME
ANNOTATION_REF_NAME = imagesrc.ANNOTATION_REF_NAME
MEDIA_INDEX = imagesrc.MEDIA_INDEX
INDEX_TYPES = imagesrc.INDEX_TYPES
MANIFEST_TYPES = imagesrc.MANIFEST_TYPES
LAYOUT_FILE = imagesrc.LAYOUT_FILE

_DIGEST_RE = re.compile(r"sha256:([a-f0-9]{64})")


def _blob_path(layout: str, desc: object) -> tuple[str, str]:
    """Returns (archive name, path on disk) of a descriptor's blob."""
    if not isinstance(desc, dict):
        raise ValueError(f"layout {layout}: descriptor is not a JSON object")
    digest = desc.get("digest")
    match = _DIGEST_RE.fullmatch(digest) if isinstance(digest, str) else None
    if match is None:
        raise ValueError(f"layout {layout}: unsupported or invalid digest "
                         f"{digest!r}")
    name = f"blobs/sha256/{match.group(1)}"
    return name, os.path.join(layout, "blobs", "sha256", match.group(1))


def _descriptor_size(path: str, desc: dict) -> int:
    size = desc.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"file {path}: descriptor has invalid size {size!r}")
    return size


def _check_digest(path: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise ValueError(f"file {path}: content has digest {actual}, "
                         f"expected {expected}")


def collect_blobs(layout: str, desc: dict, blobs: dict[str, str]) -> None:
    """desc's blob and everything it references, into blobs (name -> path).

    Sizes are checked here. Indexes and manifests, which must be parsed, are
    read and verified here once; every other blob (configs, layers) is
    verified against its digest by the tar writer while it is copied, so
    the bundle reads each large blob only once.
    """
    name, path = _blob_path(layout, desc)
    size = _descriptor_size(path, desc)
    media_type = desc.get("mediaType")
    parse = media_type in INDEX_TYPES + MANIFEST_TYPES
    if parse:
        with open(path, "rb") as f:
            raw = f.read()
        _check_digest(path, "sha256:" + hashlib.sha256(raw).hexdigest(),
                      desc["digest"])
        actual = len(raw)
    else:
        actual = os.stat(path).st_size
    if actual != size:
        raise ValueError(f"file {path}: size is {actual}, descriptor says {size}")
    if name in blobs:
        return
    blobs[name] = path
    if not parse:
        return
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"file {path}: invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"file {path}: expected a JSON object")
    if media_type in INDEX_TYPES:
        children = doc.get("manifests", [])
    else:
        children = [doc.get("config")] + list(doc.get("layers", []))
    if not isinstance(children, list):
        raise ValueError(f"file {path}: malformed {media_type}")
    for child in children:
        collect_blobs(layout, child, blobs)


def _strip_names(desc: dict) -> dict:
    annotations = {k: v for k, v in (desc.get("annotations") or {}).items()
                   if k not in (ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME)}
    out = {k: v for k, v in desc.items() if k != "annotations"}
    if annotations:
        out["annotations"] = annotations
    return out


def read_layout(layout: str) -> tuple[dict, dict[str, str]]:
    """Returns the layout's single image descriptor and all its blobs."""
    source = imagesrc.read_layout(layout)
    targets = {_strip_names(d)["digest"]: _strip_names(d)
               for d in source.index["manifests"]}
    if len(targets) != 1:
        raise ValueError(f"file {os.path.join(layout, 'index.json')}: "
                         f"expected exactly one image, found {len(targets)}")
    desc = next(iter(targets.values()))
    blobs: dict[str, str] = {}
    collect_blobs(layout, desc, blobs)
    return desc, blobs


def archive_index(desc: dict, names: Sequence[str]) -> dict:
    """Returns the archive's index.json: desc once per normalized name."""
    if not names:
        raise ValueError("at least one --name is required")
    manifests = []
    for name in sorted({reference.normalize(n) for n in names}):
        annotations = dict(desc.get("annotations") or {})
        annotations[ANNOTATION_IMAGE_NAME] = name
        annotations[ANNOTATION_REF_NAME] = reference.tag_of(name)
        manifests.append(dict(desc, annotations=annotations))
    return {"schemaVersion": 2, "mediaType": MEDIA_INDEX,
            "manifests": manifests}


def kept_index(source: imagesrc.Layout) -> dict:
    """The archive's index.json keeping the source's named descriptors."""
    if not source.names:
        raise ValueError(f"layout {source.path}: the image carries no names; "
                         "give it names (repo_tags)")
    manifests = []
    for desc in source.index["manifests"]:
        for name in imagesrc.descriptor_names(desc):
            manifests.append(archive_index(_strip_names(desc),
                                           [name])["manifests"][0])
    manifests.sort(key=lambda d: d["annotations"][ANNOTATION_IMAGE_NAME])
    return {"schemaVersion": 2, "mediaType": MEDIA_INDEX,
            "manifests": manifests}


def build_bundle(image: str, names: Sequence[str], output: str,
                 kind: str = "none", metadata: str | None = None) -> list[str]:
    """Writes the bundle; returns the names it carries."""
    compression.check_kind(kind)
    with tempfile.TemporaryDirectory(prefix="bundle-") as work:
        source = imagesrc.open_source(image, work)
        blobs: dict[str, str] = {}
        if names:
            desc, blobs = read_layout(source.path)
            index = archive_index(desc, names)
        else:
            index = kept_index(source)
            for desc in index["manifests"]:
                collect_blobs(source.path, desc, blobs)
        writer = tarwriter.TarWriter(output, kind)
        writer.add_file("oci-layout", common.canonical_json(LAYOUT_FILE))
        writer.add_file("index.json", common.canonical_json(index))
        for name, path in blobs.items():
            # Every blob is named by its digest: verified while it is copied.
            writer.add_file(name, path, sha256="sha256:" + name.rsplit("/", 1)[1])
        writer.close()
    carried = sorted({d["annotations"][ANNOTATION_IMAGE_NAME]
                      for d in index["manifests"]})
    if metadata:
        with open(metadata, "wb") as f:
            f.write(common.canonical_json({"names": carried}))
    return carried


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="bundle", description="Pack an image into an OCI archive.")
    parser.add_argument("--image", "--layout", dest="image", required=True,
                        help="OCI layout directory, OCI or docker archive")
    parser.add_argument("--name", action="append", default=[],
                        help="image reference; may be repeated")
    parser.add_argument("--output", required=True, help="archive to write")
    parser.add_argument("--compression", choices=compression.KINDS,
                        default="none")
    parser.add_argument("--metadata", help="write the bundle's names here")
    args = parser.parse_args(argv)
    build_bundle(args.image, args.name, args.output, args.compression,
                 args.metadata)


if __name__ == "__main__":
    common.run("bundle", main)
