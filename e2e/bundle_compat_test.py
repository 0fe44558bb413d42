"""Bundles from preseed_bundle are plain OCI archives: other tools read and import them.

skopeo and umoci judge the archive's shape; `ctr images import` (containerd's own importer) loads
it into a real containerd, unpacks it, and finds it complete.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import tarfile
from typing import Iterator

import pytest

from testutil.containerd import Containerd

HERE = pathlib.Path(__file__).parent
BUNDLES = {
    "hello.tar": "e2e.invalid/hello:latest",
    "pause.tar": "e2e.invalid/pause:latest",
}


def run(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    with Containerd() as instance:
        yield instance


@pytest.mark.parametrize("bundle,name", sorted(BUNDLES.items()))
def test_skopeo_inspects_bundle(bundle: str, name: str) -> None:
    inspected = json.loads(run("skopeo", "inspect", "oci-archive:" + str(HERE / bundle)))
    assert inspected["Os"] == "linux"
    assert len(inspected["Layers"]) == 1
    with tarfile.open(HERE / bundle) as tar:
        index = json.load(tar.extractfile("index.json"))
    assert inspected["Digest"] == index["manifests"][0]["digest"]


@pytest.mark.parametrize("bundle,name", sorted(BUNDLES.items()))
def test_umoci_unpacks_bundle(bundle: str, name: str, tmp_path: pathlib.Path) -> None:
    layout = tmp_path / "layout"
    with tarfile.open(HERE / bundle) as tar:
        tar.extractall(layout, filter="data")
    run("umoci", "unpack", "--image", f"{layout}:latest", str(tmp_path / "bundle"))
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    program = "/" + bundle.removesuffix(".tar")
    assert config["process"]["args"] == [program]
    assert (tmp_path / "bundle" / "rootfs" / program.lstrip("/")).stat().st_mode & 0o111


@pytest.mark.parametrize("bundle,name", sorted(BUNDLES.items()))
def test_ctr_imports_bundle(bundle: str, name: str, containerd: Containerd) -> None:
    ctr = ["ctr", "--address", containerd.address, "--namespace", "k8s.io"]
    run(*ctr, "images", "import", str(HERE / bundle))
    rows = [line.split() for line in run(*ctr, "images", "check", "name==" + name).splitlines()[1:]]
    assert len(rows) == 1, rows
    assert rows[0][0] == name
    assert rows[0][3] == "complete"
    assert rows[0][-1] == "true", "ctr import should leave the image unpacked"
