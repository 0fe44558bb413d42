"""The committed base.tar is exactly what make_base.py writes, and is a docker archive."""

import json
import tarfile
from pathlib import Path

from examples.base_archive import make_base

BASE = Path(__file__).parent / "base.tar"


def test_committed_archive_is_generated():
    assert BASE.read_bytes() == make_base.archive(), (
        "base.tar is stale: run `bazel run //examples/base_archive:make_base`")


def test_docker_archive_shape():
    with tarfile.open(BASE) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        assert manifest[0]["RepoTags"] == ["example.invalid/base:1.0"]
        config = json.loads(tar.extractfile(manifest[0]["Config"]).read())
        layer = tar.extractfile(manifest[0]["Layers"][0])
        with tarfile.open(fileobj=layer) as inner:
            names = inner.getnames()
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    assert "etc/os-release" in names and "home/nonroot" in names
