"""Bundle formats without containerd: compressed bundles, docker archives, names, platforms."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from loader import names, state
from loader.bundle import open_bundle
from loader.errors import BundleError
from loader.main import main
from loader.platforms import Platform, host
from testutil.oci_archive import (
    ImageSpec,
    build_archive,
    build_multi_platform,
    compress_file,
    corrupt_blob,
    write_docker_save,
)

NAME = "docker.io/library/hello:latest"
OTHER = "arm64" if host().architecture != "arm64" else "amd64"


def _big_layer() -> dict[str, bytes]:
    return {"big.bin": os.urandom(600 << 10)}  # stays out of memory (over 256 KiB)


@pytest.mark.parametrize("compression,suffix", [("gzip", ".tar.gz"), ("zstd", ".tzst")])
def test_compressed_bundle_is_read_in_one_pass(
    tmp_path: Path, compression: str, suffix: str
) -> None:
    spec = ImageSpec(NAME, [_big_layer(), {"etc/motd": b"hi"}], compression="")
    built = build_archive(tmp_path / "b.tar", [spec])
    packed = compress_file(built.path, tmp_path / f"b{suffix}", compression)
    seen: list[str] = []

    def sink(member, reader) -> str:  # type: ignore[no-untyped-def]
        from loader.archive import hash_stream

        seen.append(member.name)
        return hash_stream(reader, member.size)

    with open_bundle(packed, sink=sink) as bundle:
        assert not bundle.archive.seekable and bundle.archive.compression == compression
        assert bundle.names == [NAME]
        assert seen == ["blobs/" + built.images[0].layer_digests[0].replace(":", "/")]
        assert all(blob.verified for blob in bundle.blobs.values())


def test_compressed_corrupt_blob_fails(tmp_path: Path) -> None:
    spec = ImageSpec(NAME, [_big_layer()], compression="")
    built = build_archive(tmp_path / "b.tar", [spec])
    corrupt_blob(built.path, built.images[0].layer_digests[0])
    packed = compress_file(built.path, tmp_path / "b.tar.zst", "zstd")
    with pytest.raises(BundleError, match="is corrupted"):
        open_bundle(packed)


def test_truncated_compressed_bundle_fails(tmp_path: Path) -> None:
    built = build_archive(tmp_path / "b.tar", [ImageSpec(NAME, [_big_layer()], compression="")])
    packed = compress_file(built.path, tmp_path / "b.tgz", "gzip")
    data = packed.read_bytes()
    packed.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError):
        open_bundle(packed)


def test_docker_save_layout(tmp_path: Path) -> None:
    path = tmp_path / "saved.tar"
    written = write_docker_save(
        path, [ImageSpec("busybox:1.36", [{"bin/sh": b"sh"}, {"etc/motd": b"x"}])]
    )
    with open_bundle(path) as bundle:
        assert bundle.format == "docker"
        assert bundle.names == ["docker.io/library/busybox:1.36"]
        image = bundle.images[0]
        assert image.config.digest == written["busybox:1.36"]["config"]
        assert [layer.digest for layer in image.layers] == written["busybox:1.36"]["diff_ids"]
        assert {layer.media_type for layer in image.layers} == {
            "application/vnd.docker.image.rootfs.diff.tar"
        }
        assert image.manifest.media_type == "application/vnd.docker.distribution.manifest.v2+json"
        manifest = json.loads(bundle.blobs[image.manifest.digest].data or b"")
        assert manifest["config"]["digest"] == image.config.digest


def test_docker_save_without_repo_tags_is_named_by_digest(tmp_path: Path) -> None:
    path = tmp_path / "anon.tar"
    write_docker_save(path, [ImageSpec("", [{"a": b"a"}])])
    with open_bundle(path) as bundle:
        assert bundle.names[0].startswith("docker.io/library/anon@sha256:")
        assert any("has no name" in w for w in bundle.warnings)


def test_multi_platform_partial_archive(tmp_path: Path) -> None:
    path = tmp_path / "multi.tar"
    host_platform = (host().os, host().architecture)
    index_digest, images, _ = build_multi_platform(
        path, NAME, [host_platform, ("linux", OTHER), ("linux", "s390x")], absent=[("linux", "s390x")]
    )
    with open_bundle(path) as bundle:
        assert bundle.images[0].target.digest == index_digest
        assert bundle.images[0].manifest.digest == images[host_platform].manifest_digest
        assert [c.digest for c in bundle.children[index_digest]] == [
            images[host_platform].manifest_digest
        ]
    with open_bundle(path, all_platforms=True) as bundle:
        kept = [c.digest for c in bundle.children[index_digest]]
        assert kept == [
            images[host_platform].manifest_digest,
            images[("linux", OTHER)].manifest_digest,
        ]
        assert images[("linux", OTHER)].config_digest in bundle.blobs
    with pytest.raises(BundleError, match="no manifest for linux/riscv64"):
        open_bundle(path, Platform("linux", "riscv64"))


def test_names() -> None:
    assert names.normalize("busybox") == "docker.io/library/busybox:latest"
    assert names.normalize("busybox:1") == "docker.io/library/busybox:1"
    assert names.normalize("team/app:2") == "docker.io/team/app:2"
    assert names.normalize("localhost:5000/app") == "localhost:5000/app:latest"
    assert names.normalize("quay.io/a/b@sha256:" + "a" * 64) == "quay.io/a/b@sha256:" + "a" * 64
    assert names.normalize("Bad/Name") is None
    assert names.from_ref_name("7.2", "redis") == "docker.io/library/redis:7.2"
    assert names.from_ref_name("ghcr.io/x/y:1", "ignored") == "ghcr.io/x/y:1"
    assert names.bundle_stem("My_App.tar.zst") == "my-app"


def test_fingerprint_changes_with_content_not_with_reading(tmp_path: Path) -> None:
    built = build_archive(tmp_path / "a.tar", [ImageSpec(NAME, [{"a": b"1"}])])
    os.utime(built.path, ns=(0, 0))
    first = state.fingerprint(built.path, "linux/amd64")
    assert state.fingerprint(built.path, "linux/amd64") == first
    assert state.fingerprint(built.path, "all") != first
    build_archive(built.path, [ImageSpec(NAME, [{"a": b"2"}])])  # same size, same mtime
    os.utime(built.path, ns=(0, 0))
    assert state.fingerprint(built.path, "linux/amd64") != first
    packed = compress_file(built.path, tmp_path / "a.tar.gz", "gzip")
    assert state.fingerprint(packed, "x").startswith(f"v1:{packed.stat().st_size}:")


def test_dry_run_verifies_every_bundle_without_containerd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = tmp_path / "pre" / "k8s.io"
    ns.mkdir(parents=True)
    good = build_archive(ns / "a.tar", [ImageSpec(NAME, [_big_layer()], compression="")])
    compress_file(good.path, ns / "b.tar.zst", "zstd")
    write_docker_save(ns / "c.tar", [ImageSpec("busybox:1", [{"a": b"a"}])])
    bad = build_archive(ns / "d.tar", [ImageSpec("x:1", [_big_layer()], compression="")])
    corrupt_blob(bad.path, bad.images[0].layer_digests[0])
    report = tmp_path / "report.json"
    rc = main(
        [
            "--dry-run",
            "--preseed-dir",
            str(tmp_path / "pre"),
            "--address",
            str(tmp_path / "none.sock"),
            "--report",
            str(report),
            "--log-format=json",
        ]
    )
    assert rc == 1
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    bundles = [line for line in lines if line["msg"] == "bundle"]
    assert [Path(b["file"]).name for b in bundles] == ["a.tar", "b.tar.zst", "c.tar", "d.tar"]
    assert [b["result"] for b in bundles] == ["verified"] * 3 + ["failed"]
    assert "is corrupted" in bundles[3]["error"]
    assert bundles[1]["format"] == "oci+zstd" and bundles[2]["format"] == "docker"
    body = json.loads(report.read_text())
    assert body["exit_code"] == 1 and body["dry_run"] is True
    assert body["summary"] == {
        "bundles": 4, "loaded": 0, "unchanged": 0, "verified": 3, "failed": 1, "pruned": 0
    }


def test_help_documents_everything(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--address", "--preseed-dir", "--snapshotter", "--timeout", "--jobs", "--all-platforms",
        "--no-pin", "--prune", "--dry-run", "--report", "--log-format", "exit codes",
        "preseed.dev/bundle", "io.cri-containerd.pinned",
    ):
        assert flag in out, flag


def test_tar_with_hard_linked_blob(tmp_path: Path) -> None:
    built = build_archive(tmp_path / "b.tar", [ImageSpec(NAME, [{"a": b"a"}])])
    with tarfile.open(built.path, "a") as tar:
        info = tarfile.TarInfo("extra-link")
        info.type = tarfile.LNKTYPE
        info.linkname = "index.json"
        tar.addfile(info)
    with open_bundle(built.path) as bundle:
        assert bundle.names == [NAME]
