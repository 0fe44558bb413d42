"""Packs an OCI image layout into a preseed bundle (an OCI archive tar).

The archive's index.json names the image once per reference, the way
`ctr images export` does. Usage:
bundle.py --layout DIR --name REF [--name REF ...] --output BUNDLE.tar
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from typing import Sequence

from rules.private.tools import common, reference, tarwriter

ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_TYPES = (MEDIA_INDEX,
               "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}

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


def verify_blob(layout: str, desc: dict) -> tuple[str, str]:
    """Checks a blob's sha256 and size against its descriptor."""
    name, path = _blob_path(layout, desc)
    size = desc.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"file {path}: descriptor has invalid size {size!r}")
    sha, actual = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(tarwriter.CHUNK_SIZE):
            sha.update(chunk)
            actual += len(chunk)
    if "sha256:" + sha.hexdigest() != desc["digest"]:
        raise ValueError(f"file {path}: content has digest "
                         f"sha256:{sha.hexdigest()}, expected {desc['digest']}")
    if actual != size:
        raise ValueError(f"file {path}: size is {actual}, descriptor says {size}")
    return name, path


def collect_blobs(layout: str, desc: dict, blobs: dict[str, str]) -> None:
    """Verifies desc's blob and everything it references, into blobs."""
    name, path = verify_blob(layout, desc)
    blobs[name] = path
    media_type = desc.get("mediaType")
    if media_type not in INDEX_TYPES + MANIFEST_TYPES:
        return
    doc = common.load_json(path)
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


def read_layout(layout: str) -> tuple[dict, dict[str, str]]:
    """Returns the layout's single manifest descriptor and all its blobs."""
    marker = common.load_json(os.path.join(layout, "oci-layout"))
    if not isinstance(marker, dict) or "imageLayoutVersion" not in marker:
        raise ValueError(f"layout {layout}: oci-layout has no "
                         "imageLayoutVersion")
    index_path = os.path.join(layout, "index.json")
    index = common.load_json(index_path)
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or len(manifests) != 1:
        count = len(manifests) if isinstance(manifests, list) else 0
        raise ValueError(f"file {index_path}: expected exactly one manifest, "
                         f"found {count}")
    blobs: dict[str, str] = {}
    collect_blobs(layout, manifests[0], blobs)
    return manifests[0], blobs


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


def build_bundle(layout: str, names: Sequence[str], output: str) -> None:
    desc, blobs = read_layout(layout)
    index = archive_index(desc, names)
    writer = tarwriter.TarWriter(output, "none")
    writer.add_file("oci-layout", common.canonical_json(LAYOUT_FILE))
    writer.add_file("index.json", common.canonical_json(index))
    for name, path in blobs.items():
        writer.add_file(name, path)
    writer.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="bundle", description="Pack an OCI layout into an OCI archive.")
    parser.add_argument("--layout", required=True, help="OCI layout directory")
    parser.add_argument("--name", action="append", required=True,
                        help="image reference; may be repeated")
    parser.add_argument("--output", required=True, help="archive to write")
    args = parser.parse_args(argv)
    build_bundle(args.layout, args.name, args.output)


if __name__ == "__main__":
    common.run("bundle", main)
