"""Writes a reproducible node rootfs tarball from a JSON spec.

Usage: rootfs.py --spec SPEC.json --output NODE.tar [--compression KIND]
                 [--manifest-output MANIFEST.json]

The spec has "entries" (see entries.py) and, optionally, "manifest":
{"dest": path of the manifest in the rootfs, "preseed_dir": "/containerd/preseed",
 "bundles": [{"namespace", "path", "src", "metadata"}]}. Each bundle's
file is placed at <preseed_dir>/<namespace>/<path>, and the manifest lists
every bundle with its sha256, size and the image names from its metadata
file (a JSON object with "names", written by the bundle tool).
"""

from __future__ import annotations

import argparse
import hashlib
from typing import Any, Sequence

from rules.private.tools import common, compression, entries, tarwriter

MANIFEST_VERSION = 1


def _sha256(path: str) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(tarwriter.CHUNK_SIZE):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def build_manifest(spec: Any) -> tuple[dict, list[dict]]:
    """Returns the manifest object and the rootfs entries of its bundles."""
    common.check_keys(spec, "spec: manifest", ("dest", "preseed_dir",
                                               "bundles"))
    preseed_dir = spec["preseed_dir"]
    if not isinstance(preseed_dir, str) or not preseed_dir.startswith("/"):
        raise ValueError("spec: manifest: 'preseed_dir' must be an absolute "
                         "path")
    bundles, files, seen = [], [], set()
    for i, b in enumerate(spec["bundles"]):
        where = f"spec: manifest: bundles[{i}]"
        common.check_keys(b, where, ("namespace", "path", "src", "metadata"))
        path = f"{b['namespace']}/{b['path']}"
        if tarwriter.clean_name(path) != path or path.count("/") != 1:
            raise ValueError(f"{where}: invalid bundle path {path!r}")
        if path in seen:
            raise ValueError(f"{where}: two bundles have the path {path!r}")
        seen.add(path)
        metadata = common.load_json(b["metadata"])
        names = metadata.get("names") if isinstance(metadata, dict) else None
        if not isinstance(names, list) or not all(
                isinstance(n, str) for n in names):
            raise ValueError(f"file {b['metadata']}: 'names' must be a list "
                             "of strings")
        digest, size = _sha256(b["src"])
        bundles.append({"namespace": b["namespace"], "path": path,
                        "sha256": digest, "size": size,
                        "names": sorted(names)})
        files.append({"dest": f"{preseed_dir}/{path}", "src": b["src"],
                      "mode": "0644"})
    bundles.sort(key=lambda b: b["path"])
    manifest = {"version": MANIFEST_VERSION,
                "preseed_dir": preseed_dir.rstrip("/") or "/",
                "bundles": bundles}
    return manifest, files


def build_rootfs(spec: Any, output: str, kind: str = "none",
                 manifest_output: str | None = None) -> None:
    common.check_keys(spec, "spec", ("entries",), ("manifest",))
    writer = tarwriter.TarWriter(output, compression.check_kind(kind))
    entries.add_entries(writer, spec["entries"], "spec: entries")
    if "manifest" in spec:
        manifest, files = build_manifest(spec["manifest"])
        entries.add_entries(writer, files, "spec: manifest: bundles")
        data = common.canonical_json(manifest) + b"\n"
        writer.add_file(spec["manifest"]["dest"], data, 0o644)
        if manifest_output:
            with open(manifest_output, "wb") as f:
                f.write(data)
    elif manifest_output:
        raise ValueError("--manifest-output needs a manifest in the spec")
    writer.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="rootfs", description="Write a reproducible rootfs tarball.")
    parser.add_argument("--spec", required=True, help="rootfs spec JSON file")
    parser.add_argument("--output", required=True, help="tarball to write")
    parser.add_argument("--compression", choices=compression.KINDS,
                        default="none")
    parser.add_argument("--manifest-output",
                        help="also write the manifest here")
    args = parser.parse_args(argv)
    build_rootfs(common.load_json(args.spec), args.output, args.compression,
                 args.manifest_output)


if __name__ == "__main__":
    common.run("rootfs", main)
