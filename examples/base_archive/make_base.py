"""Writes base.tar: a small docker archive (as `docker save` writes it) used as a base image.

It holds one image, tagged example.invalid/base:1.0, with one uncompressed layer of plain files
(os-release, passwd, group). The output is deterministic; a test checks that the committed file
is what this script writes.

    bazel run //examples/base_archive:make_base        # rewrites examples/base_archive/base.tar
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys

from rules.private.tools import common, tarwriter

TAG = "example.invalid/base:1.0"
FILES = {
    "etc/os-release": (b'NAME="Example Base"\nID=example-base\nVERSION_ID=1.0\n'
                       b'PRETTY_NAME="Example Base 1.0"\n', 0o644),
    "etc/passwd": (b"root:x:0:0:root:/root:/sbin/nologin\n"
                   b"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n", 0o644),
    "etc/group": (b"root:x:0:\nnonroot:x:65532:\n", 0o644),
}


def layer() -> bytes:
    out = io.BytesIO()
    writer = tarwriter.TarWriter(out)
    for name, (data, mode) in FILES.items():
        writer.add_file(name, data, mode)
    writer.add_directory("home/nonroot", 0o755, 65532, 65532)
    writer.add_directory("tmp", 0o1777)
    writer.close()
    return out.getvalue()


def archive() -> bytes:
    layer_tar = layer()
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    config = common.canonical_json({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                   "Labels": {"org.example.base": "1.0"}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z",
                     "created_by": "examples/base_archive/make_base.py"}],
    })
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_dir = diff_id.split(":")[1]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [TAG],
                            "Layers": [f"{layer_dir}/layer.tar"]}]).encode()
    out = io.BytesIO()
    writer = tarwriter.TarWriter(out)
    writer.add_file(config_name, config)
    writer.add_file(f"{layer_dir}/layer.tar", layer_tar)
    writer.add_file("manifest.json", manifest)
    writer.add_file("repositories", json.dumps(
        {TAG.split(":")[0]: {TAG.split(":")[1]: layer_dir}}).encode())
    writer.close()
    return out.getvalue()


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        output = argv[1]
    else:
        workspace = os.environ.get("BUILD_WORKSPACE_DIRECTORY")
        if not workspace:
            print("usage: make_base.py OUTPUT (or bazel run it)", file=sys.stderr)
            return 2
        output = os.path.join(workspace, "examples", "base_archive", "base.tar")
    with open(output, "wb") as f:
        f.write(archive())
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
