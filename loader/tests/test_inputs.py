"""Bundles written by other tools and every layer encoding, loaded into a real containerd."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from loader.tests.helpers import assert_unpacked, bundle_records, load
from testutil.containerd import Containerd
from testutil.oci_archive import (
    ImageSpec,
    build_archive,
    build_multi_platform,
    compress_file,
    run_tool,
    tar_dir,
    write_docker_save,
    write_oci_dir,
)
from loader.platforms import host

NS = "k8s.io"


def _needs(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def _oci_dir(tmp_path: Path) -> tuple[Path, list[str]]:
    spec = ImageSpec("source:latest", [{"bin/app": os.urandom(400 << 10)}, {"etc/motd": b"hi\n"}])
    built = write_oci_dir(tmp_path / "src", [spec])
    return tmp_path / "src", built.images[0].diff_ids




def test_skopeo_oci_archive_with_zstd_layers(
    containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _needs("skopeo")
    src, diff_ids = _oci_dir(tmp_path)
    preseed = tmp_path / "preseed"
    (preseed / NS).mkdir(parents=True)
    dest = preseed / NS / "app.tar"
    run_tool(
        "skopeo", "copy", "--dest-compress-format", "zstd",
        f"oci:{src}:latest", f"oci-archive:{dest}:example.com/team/app:1",
    )
    rc, records = load(containerd, preseed, capsys)
    assert rc == 0, records
    line = bundle_records(records)["app.tar"]
    assert line["result"] == "loaded" and line["names"] == ["example.com/team/app:1"]
    state = containerd.state_reader()
    image = state.images(NS)["example.com/team/app:1"]
    assert_unpacked(state, NS, diff_ids)
    manifest = state.content(NS, image.target.digest)
    assert manifest is not None and manifest.labels["containerd.io/gc.ref.content.l.0"]
    layer = manifest.labels["containerd.io/gc.ref.content.l.1"]
    with open(dest, "rb"):
        pass
    raw = subprocess.run(
        ["ctr", "-a", containerd.address, "-n", NS, "content", "get", image.target.digest],
        capture_output=True, check=True,
    ).stdout
    types = {entry["mediaType"] for entry in json.loads(raw)["layers"]}
    assert types == {"application/vnd.oci.image.layer.v1.tar+zstd"}, types
    assert state.content(NS, layer) is not None


def test_skopeo_docker_archive(
    containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _needs("skopeo", "ctr")
    src, diff_ids = _oci_dir(tmp_path)
    preseed = tmp_path / "preseed"
    (preseed / NS).mkdir(parents=True)
    run_tool("skopeo", "copy", f"oci:{src}:latest", f"docker-archive:{preseed / NS / 'd.tar'}:app:2")
    rc, records = load(containerd, preseed, capsys)
    assert rc == 0, records
    line = bundle_records(records)["d.tar"]
    assert line["format"] == "docker" and line["names"] == ["docker.io/library/app:2"]
    assert_unpacked(containerd.state_reader(), NS, diff_ids)
    check = run_tool("ctr", "-a", containerd.address, "-n", NS, "images", "check")
    assert "docker.io/library/app:2" in check and "complete" in check


def test_docker_save_layout_and_compressed_whole(
    containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preseed = tmp_path / "preseed"
    (preseed / NS).mkdir(parents=True)
    big = {"data.bin": os.urandom(700 << 10)}
    written = write_docker_save(
        preseed / NS / "saved.tar", [ImageSpec("busybox:1.36", [big, {"etc/motd": b"x"}])]
    )
    oci = build_archive(tmp_path / "o.tar", [ImageSpec("example.com/z:1", [big, {"z": b"z"}])])
    compress_file(oci.path, preseed / NS / "z.tar.zst", "zstd")
    g = build_archive(tmp_path / "g.tar", [ImageSpec("example.com/g:1", [{"g": os.urandom(900 << 10)}])])
    compress_file(g.path, preseed / NS / "g.tgz", "gzip")
    write_docker_save(tmp_path / "s2.tar", [ImageSpec("example.com/s:1", [big])])
    compress_file(tmp_path / "s2.tar", preseed / NS / "s.tar.gz", "gzip")
    rc, records = load(containerd, preseed, capsys)
    assert rc == 0, records
    lines = bundle_records(records)
    assert {k: v["format"] for k, v in lines.items()} == {
        "g.tgz": "oci+gzip", "s.tar.gz": "docker+gzip", "saved.tar": "docker", "z.tar.zst": "oci+zstd"
    }
    state = containerd.state_reader()
    assert_unpacked(state, NS, written["busybox:1.36"]["diff_ids"])
    assert_unpacked(state, NS, oci.images[0].diff_ids)
    assert_unpacked(state, NS, g.images[0].diff_ids)
    # (CRI adds records named by image ID in k8s.io.)
    assert {n for n in state.images(NS) if not n.startswith("sha256:")} == {
        "docker.io/library/busybox:1.36", "example.com/z:1", "example.com/g:1", "example.com/s:1"
    }
    rc, records = load(containerd, preseed, capsys)
    assert rc == 0 and {v["result"] for v in bundle_records(records).values()} == {"unchanged"}


def test_umoci_layout(containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _needs("umoci")
    layout, work = tmp_path / "layout", tmp_path / "bundle"
    run_tool("umoci", "init", "--layout", str(layout))
    run_tool("umoci", "new", "--image", f"{layout}:latest")
    run_tool("umoci", "unpack", "--image", f"{layout}:latest", str(work))
    (work / "rootfs" / "hello.txt").write_text("made by umoci\n")
    run_tool("umoci", "repack", "--image", f"{layout}:latest", str(work))
    preseed = tmp_path / "preseed"
    (preseed / NS).mkdir(parents=True)
    tar_dir(layout, preseed / NS / "tool.tar")
    rc, records = load(containerd, preseed, capsys)
    assert rc == 0, records
    line = bundle_records(records)["tool.tar"]
    # The index names it only by the tag "latest": the file name makes it full.
    assert line["names"] == ["docker.io/library/tool:latest"] and line["layers_unpacked"] >= 1
    assert "docker.io/library/tool:latest" in containerd.state_reader().images(NS)


def test_ctr_export_round_trip(
    containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _needs("ctr")
    preseed = tmp_path / "preseed"
    (preseed / NS).mkdir(parents=True)
    built = build_archive(preseed / NS / "a.tar", [ImageSpec("example.com/a:1", [{"a": b"a"}])])
    rc, _ = load(containerd, preseed, capsys)
    assert rc == 0
    (preseed / "default").mkdir()
    exported = preseed / "default" / "exported.tar"
    run_tool("ctr", "-a", containerd.address, "-n", NS, "images", "export", str(exported), "example.com/a:1")
    rc, records = load(containerd, preseed, capsys)
    assert rc == 0, records
    assert bundle_records(records)["exported.tar"]["names"] == ["example.com/a:1"]
    state = containerd.state_reader()
    assert state.images("default")["example.com/a:1"].target.digest == built.images[0].manifest_digest
    assert_unpacked(state, "default", built.images[0].diff_ids)


@pytest.mark.parametrize(
    "compression,docker",
    [("zstd", False), ("", False), ("gzip", True), ("", True)],
    ids=["oci-zstd", "oci-uncompressed", "docker-gzip", "docker-uncompressed"],
)
def test_layer_encodings_unpack_through_diff_apply(
    containerd: Containerd,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    compression: str,
    docker: bool,
) -> None:
    preseed = tmp_path / "preseed"
    (preseed / NS).mkdir(parents=True)
    spec = ImageSpec(
        "example.com/enc:1",
        [{"a": os.urandom(300 << 10)}, {"b/c": b"c"}],
        compression=compression,
        docker_media_types=docker,
    )
    built = build_archive(preseed / NS / "enc.tar", [spec])
    rc, records = load(containerd, preseed, capsys)
    assert rc == 0, records
    assert bundle_records(records)["enc.tar"]["layers_unpacked"] == 2
    state = containerd.state_reader()
    assert_unpacked(state, NS, built.images[0].diff_ids)
    for layer, diff_id in zip(built.images[0].layer_digests, built.images[0].diff_ids):
        info = state.content(NS, layer)
        assert info is not None and info.labels["containerd.io/uncompressed"] == diff_id


def test_multi_platform_partial_archive(
    containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = "arm64" if host().architecture != "arm64" else "amd64"
    here = (host().os, host().architecture)
    preseed = tmp_path / "preseed"
    (preseed / NS).mkdir(parents=True)
    (preseed / "default").mkdir()
    platforms = [here, ("linux", other), ("linux", "s390x")]
    for ns in (NS, "default"):
        index, images, _ = build_multi_platform(
            preseed / ns / "multi.tar", "example.com/m:1", platforms, absent=[("linux", "s390x")]
        )
    rc, records = load(containerd, preseed, capsys)
    assert rc == 0, records
    state = containerd.state_reader()
    assert state.images(NS)["example.com/m:1"].target.digest == index
    assert_unpacked(state, NS, images[here].diff_ids)
    assert state.content(NS, images[("linux", other)].manifest_digest) is None
    # With --all-platforms every present platform's content is kept; only the host's unpacked.
    rc, records = load(containerd, preseed, capsys, "--all-platforms")
    assert rc == 0 and bundle_records(records)["multi.tar"]["result"] == "loaded"
    state.collect_garbage(NS)
    assert state.content(NS, images[("linux", other)].manifest_digest) is not None
    assert state.content(NS, images[("linux", other)].layer_digests[0]) is not None
    assert state.snapshot(NS, images[("linux", other)].diff_ids[0]) is None
