"""The examples' bundles are well-formed for skopeo, umoci and containerd, and they run.

Every bundle is read by `skopeo inspect`, unpacked by `umoci` where it applies (umoci 0.4 reads
neither zstd layers nor image indexes), imported into a real containerd with
`ctr images import`, and run with `ctr run`. The node image is checked against its manifest.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import zstandard

from testutil.containerd import Containerd

EXAMPLES = Path(__file__).absolute().parents[1]
NODE = EXAMPLES / "node" / "node.tar"
MANIFEST = EXAMPLES / "node" / "node.manifest.json"

# bundle file, namespace, names, umoci applies, run (argv, expected stdout)
BUNDLES = [
    ("go_service/service.tar", "k8s.io", ["registry.example.invalid/example/service:1.0"], True,
     (["/app/service", "-check"],
      "greeting=Hello from a preseeded service uid=65532 cwd=/var/lib/service mode=production\n")),
    ("base_archive/app.tar.gz", "k8s.io", ["registry.example.invalid/example/app:1.0"], True,
     ([], "running on Example Base 1.0 as uid 65532\n")),
    ("base_archive/base.tar.zst", "example.system", ["example.invalid/base:1.0"], True, None),
    ("multiarch/arch.tar.zst", "example.system", ["registry.example.invalid/example/arch:1.0"], False,
     ([], "arch=amd64\n")),
]


def uncompressed(path: Path, tmp_path: Path) -> Path:
    """The bundle as a plain OCI archive (ctr and skopeo read those)."""
    if path.suffix == ".tar":
        return path
    out = tmp_path / (path.name.split(".")[0] + ".tar")
    with open(out, "wb") as dst:
        if path.suffix == ".gz":
            with gzip.open(path) as src:
                shutil.copyfileobj(src, dst)
        else:
            with open(path, "rb") as src:
                zstandard.ZstdDecompressor().copy_stream(src, dst)
    return out


def run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{argv}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    with Containerd() as instance:
        yield instance


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b[0] for b in BUNDLES])
def test_bundle(bundle, tmp_path: Path, containerd: Containerd) -> None:
    rel, namespace, names, umoci_applies, runs = bundle
    archive = uncompressed(EXAMPLES / rel, tmp_path)
    with tarfile.open(archive) as tar:
        index = json.loads(tar.extractfile("index.json").read())
    refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert sorted(m["annotations"]["io.containerd.image.name"] for m in index["manifests"]) == names

    inspected = json.loads(run("skopeo", "inspect", f"oci-archive:{archive}:{refs[0]}"))
    assert inspected["Os"] == "linux" and inspected["Architecture"] == "amd64"
    assert inspected["Layers"]

    if umoci_applies:
        layout = tmp_path / "layout"
        layout.mkdir()
        with tarfile.open(archive) as tar:
            tar.extractall(layout)
        run("umoci", "unpack", "--image", f"{layout}:{refs[0]}", str(tmp_path / "bundle"))
        assert (tmp_path / "bundle" / "rootfs").is_dir()

    run("ctr", "-a", containerd.address, "-n", namespace, "images", "import", str(archive))
    listed = run("ctr", "-a", containerd.address, "-n", namespace, "images", "ls", "-q").split()
    assert set(names) <= set(listed)
    if runs:
        argv, expected = runs
        out = run("ctr", "-a", containerd.address, "-n", namespace, "run", "--rm",
                  "--runc-root", str(containerd.workdir / "runc-ctr"),
                  names[0], "example-" + uuid.uuid4().hex[:12], *argv)
        assert out.replace("\r\n", "\n") == expected


def test_go_service_image_content(tmp_path: Path) -> None:
    """Modes, owners, symlinks and config as the BUILD file asks."""
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(EXAMPLES / "go_service" / "service.tar") as tar:
        tar.extractall(layout)
    run("umoci", "unpack", "--image", f"{layout}:1.0", str(tmp_path / "b"))
    rootfs = tmp_path / "b" / "rootfs"
    greeting = (rootfs / "etc/service/greeting").stat()
    assert (greeting.st_uid, greeting.st_gid, greeting.st_mode & 0o7777) == (65532, 65532, 0o440)
    data = (rootfs / "var/lib/service").stat()
    assert (data.st_uid, data.st_mode & 0o7777) == (65532, 0o750)
    assert (rootfs / "usr/local/bin/service").readlink() == Path("/app/service")
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["process"]["user"]["uid"] == 65532
    assert config["process"]["cwd"] == "/var/lib/service"
    assert config["process"]["args"] == ["/app/service", "-listen", ":8080"]


def test_node_image_matches_its_manifest(tmp_path: Path) -> None:
    manifest_bytes = MANIFEST.read_bytes()
    manifest = json.loads(manifest_bytes)
    with tarfile.open(NODE) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("etc/preseed/manifest.json").read() == manifest_bytes
        for entry in manifest["bundles"]:
            data = tar.extractfile("containerd/preseed/" + entry["path"]).read()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert len(data) == entry["size"]
        assert tar.extractfile("etc/motd").read().startswith(b"This node boots")
    assert manifest["version"] == 1 and manifest["preseed_dir"] == "/containerd/preseed"
    assert [(b["path"], b["names"]) for b in manifest["bundles"]] == sorted(
        (f"{ns}/{Path(rel).name}", names) for rel, ns, names, _, _ in BUNDLES)
    for rel, _, _, _, _ in BUNDLES:
        assert (EXAMPLES / rel).read_bytes() == _bundle_bytes(NODE, rel)
    conf = members["etc/example/node.conf"]
    assert (conf.mode, conf.uid) == (0o600, 0)
    state = members["var/lib/example"]
    assert state.isdir() and (state.uid, state.gid) == (1000, 1000)
    assert members["usr/bin/preseed-loader"].mode == 0o755


def _bundle_bytes(node: Path, rel: str) -> bytes:
    with tarfile.open(node) as tar:
        for m in tar.getmembers():
            if m.name.startswith("containerd/preseed/") and m.name.endswith("/" + Path(rel).name):
                return tar.extractfile(m).read()
    raise AssertionError(f"{rel} is not in the node image")
