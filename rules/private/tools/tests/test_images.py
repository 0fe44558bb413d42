"""Base images, extra layers, compression, indexes and bundles from archives."""

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import zstandard

from rules.private.tools import (bundle, common, compression, image_index,
                                 imagesrc, oci_layout)


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docker_archive(path: Path, tags: list[str], layers: list[bytes],
                   config: dict | None = None) -> dict:
    """Writes a docker archive as `docker save` does; returns its config."""
    diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(layer)
                                           if layer[:2] == b"\x1f\x8b"
                                           else layer).hexdigest()
                for layer in layers]
    config = dict(config or {}, architecture="amd64", os="linux",
                  rootfs={"type": "layers", "diff_ids": diff_ids})
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    files = {config_name: config_bytes}
    layer_names = []
    for i, layer in enumerate(layers):
        files[f"l{i}/layer.tar"] = layer
        layer_names.append(f"l{i}/layer.tar")
    files["manifest.json"] = json.dumps([{
        "Config": config_name, "RepoTags": tags, "Layers": layer_names}]).encode()
    path.write_bytes(tar_bytes(files))
    return config


def image(layout: Path) -> tuple[dict, dict, dict]:
    index = json.loads((layout / "index.json").read_bytes())
    desc = index["manifests"][0]
    manifest = json.loads(Path(imagesrc.blob_path(str(layout),
                                                  desc["digest"])).read_bytes())
    config = json.loads(Path(imagesrc.blob_path(
        str(layout), manifest["config"]["digest"])).read_bytes())
    return desc, manifest, config


def layer_files(layout: Path, desc: dict) -> dict[str, tarfile.TarInfo]:
    data = Path(imagesrc.blob_path(str(layout), desc["digest"])).read_bytes()
    kind = compression.detect(data)
    if kind == "gzip":
        data = gzip.decompress(data)
    elif kind == "zstd":
        data = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(data)).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


@pytest.fixture
def base_archive(tmp_path) -> Path:
    path = tmp_path / "base.tar"
    docker_archive(path, ["example.com/base:1"],
                   [tar_bytes({"etc/os-release": b"ID=base\n"})],
                   {"config": {"Env": ["PATH=/bin", "A=1"], "Cmd": ["/sh"],
                               "Labels": {"from": "base"}},
                    "container_config": {"x": 1}})
    return path


def spec(**kw) -> dict:
    return dict({"os": "linux", "architecture": "amd64"}, **kw)


def test_docker_archive_opens_as_layout(tmp_path, base_archive):
    layout = imagesrc.open_source(str(base_archive), str(tmp_path / "w"))
    assert layout.names == ["example.com/base:1"]
    desc = imagesrc.find_manifest(layout, "linux", "amd64")
    assert desc["platform"] == {"architecture": "amd64", "os": "linux"}
    with pytest.raises(ValueError, match="no image for platform linux/arm64"):
        imagesrc.find_manifest(layout, "linux", "arm64")


def test_image_on_docker_base(tmp_path, base_archive):
    app = tmp_path / "app"
    app.write_bytes(b"app")
    out = tmp_path / "out"
    oci_layout.build_layout(spec(
        base=str(base_archive), entrypoint=["/app"], env={"A": "2"},
        labels={"mine": "yes"}, exposed_ports=["8080", "53/udp"],
        files=[{"src": str(app), "dest": "/app", "mode": "0755"}]), str(out))
    _, manifest, config = image(out)
    assert len(manifest["layers"]) == 2
    assert [l["mediaType"] for l in manifest["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip"]
    assert list(layer_files(out, manifest["layers"][0])) == ["etc/os-release"]
    assert "app" in layer_files(out, manifest["layers"][1])
    assert config["config"] == {
        "Entrypoint": ["/app"],  # a new entrypoint clears the base's Cmd
        "Env": ["A=2", "PATH=/bin"],
        "Labels": {"from": "base", "mine": "yes"},
        "ExposedPorts": {"53/udp": {}, "8080/tcp": {}},
    }
    assert "container_config" not in config
    assert len(config["rootfs"]["diff_ids"]) == 2
    assert len(config["history"]) == 1


def test_base_entrypoint_is_inherited(tmp_path, base_archive):
    out = tmp_path / "out"
    oci_layout.build_layout(spec(base=str(base_archive)), str(out))
    _, manifest, config = image(out)
    assert len(manifest["layers"]) == 1  # no own layer when nothing is added
    assert config["config"]["Cmd"] == ["/sh"]


def test_missing_entrypoint_rejected(tmp_path):
    with pytest.raises(ValueError, match="no entrypoint or cmd"):
        oci_layout.build_layout(spec(), str(tmp_path / "out"))


def test_base_from_layout_and_oci_archive(tmp_path, base_archive):
    first = tmp_path / "first"
    oci_layout.build_layout(spec(base=str(base_archive), cmd=["/one"]),
                            str(first))
    second = tmp_path / "second"
    oci_layout.build_layout(spec(base=str(first), cmd=["/two"]), str(second))
    _, manifest, config = image(second)
    assert len(manifest["layers"]) == 1
    assert config["config"]["Cmd"] == ["/two"]
    archive = tmp_path / "first.tar.zst"
    bundle.build_bundle(str(first), ["x"], str(archive), "zstd")
    third = tmp_path / "third"
    oci_layout.build_layout(spec(base=str(archive)), str(third))
    assert image(third)[2]["config"]["Cmd"] == ["/one"]


@pytest.mark.parametrize("kind", ["none", "gzip", "zstd"])
def test_layers_and_compression(tmp_path, kind):
    extra = tmp_path / "extra.tar.gz"
    extra.write_bytes(gzip.compress(tar_bytes({"opt/x": b"x"})))
    out = tmp_path / "out"
    oci_layout.build_layout(spec(
        cmd=["/x"], layers=[str(extra)], compression=kind,
        entries=[{"dest": "/data", "directory": True, "uid": 1000,
                  "gid": 1000, "mode": "0700"},
                 {"dest": "/bin/sh", "symlink": "/x"}]), str(out))
    _, manifest, config = image(out)
    types = [l["mediaType"] for l in manifest["layers"]]
    assert types == [compression.LAYER_MEDIA_TYPES[kind]] * 2
    assert list(layer_files(out, manifest["layers"][0])) == ["opt/x"]
    own = layer_files(out, manifest["layers"][1])
    assert own["data"].uid == 1000 and own["data"].mode == 0o700
    assert own["bin/sh"].issym() and own["bin/sh"].linkname == "/x"
    diff = "sha256:" + hashlib.sha256(tar_bytes({"opt/x": b"x"})).hexdigest()
    assert config["rootfs"]["diff_ids"][0] == diff


def test_layer_that_is_no_tarball_is_rejected(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar" * 100)
    with pytest.raises(ValueError, match="bad.tar: not a valid tarball"):
        oci_layout.build_layout(spec(cmd=["/x"], layers=[str(bad)]),
                                str(tmp_path / "out"))


def test_same_inputs_same_bytes(tmp_path, base_archive):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        oci_layout.build_layout(spec(base=str(base_archive), cmd=["/x"],
                                     compression="zstd",
                                     entries=[{"dest": "/d", "directory": True}]),
                                str(out))
        outs.append({p.relative_to(out): p.read_bytes()
                     for p in out.rglob("*") if p.is_file()})
    assert outs[0] == outs[1]


def build_platform(tmp_path: Path, arch: str) -> Path:
    out = tmp_path / arch
    oci_layout.build_layout(spec(architecture=arch, cmd=["/x"]), str(out))
    return out


def test_image_index(tmp_path):
    layouts = [build_platform(tmp_path, a) for a in ("amd64", "arm64")]
    out = tmp_path / "index"
    desc = image_index.build_index([str(l) for l in layouts], str(out),
                                   {"org.example": "y"})
    assert desc["mediaType"] == imagesrc.MEDIA_INDEX
    index = json.loads(Path(imagesrc.blob_path(str(out), desc["digest"]))
                       .read_bytes())
    assert [m["platform"]["architecture"] for m in index["manifests"]] == [
        "amd64", "arm64"]
    assert index["annotations"] == {"org.example": "y"}
    layout = imagesrc.read_layout(str(out))
    assert imagesrc.find_manifest(layout, "linux", "arm64")["digest"] == \
        index["manifests"][1]["digest"]
    archive = tmp_path / "index.tar"
    assert bundle.build_bundle(str(out), ["multi:1"], str(archive)) == [
        "docker.io/library/multi:1"]
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    for m in index["manifests"]:
        assert "blobs/sha256/" + m["digest"].split(":")[1] in names


def test_image_index_rejects_duplicate_platforms(tmp_path):
    layout = build_platform(tmp_path, "amd64")
    with pytest.raises(ValueError, match="platform linux/amd64 is also"):
        image_index.build_index([str(layout), str(layout)],
                                str(tmp_path / "out"))


def test_bundle_keeps_docker_repo_tags(tmp_path, base_archive):
    out = tmp_path / "b.tar.gz"
    meta = tmp_path / "meta.json"
    names = bundle.build_bundle(str(base_archive), [], str(out), "gzip",
                                str(meta))
    assert names == ["example.com/base:1"]
    assert json.loads(meta.read_bytes()) == {"names": ["example.com/base:1"]}
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    with tarfile.open(out, "r:gz") as tar:
        index = json.loads(tar.extractfile("index.json").read())
    assert [m["annotations"] for m in index["manifests"]] == [{
        "io.containerd.image.name": "example.com/base:1",
        "org.opencontainers.image.ref.name": "1"}]


def test_bundle_repo_tags_replace_docker_names(tmp_path, base_archive):
    out = tmp_path / "b.tar.zst"
    names = bundle.build_bundle(str(base_archive), ["other:2"], str(out),
                                "zstd")
    assert names == ["docker.io/library/other:2"]
    data = zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO(out.read_bytes())).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        index = json.loads(tar.extractfile("index.json").read())
    assert [m["annotations"]["io.containerd.image.name"]
            for m in index["manifests"]] == ["docker.io/library/other:2"]


def test_bundle_output_is_deterministic(tmp_path, base_archive):
    for kind in compression.KINDS:
        a, b = tmp_path / f"a.{kind}", tmp_path / f"b.{kind}"
        bundle.build_bundle(str(base_archive), [], str(a), kind)
        bundle.build_bundle(str(base_archive), [], str(b), kind)
        assert a.read_bytes() == b.read_bytes()


def test_archive_that_is_no_image(tmp_path):
    path = tmp_path / "x.tar"
    path.write_bytes(tar_bytes({"hello": b"x"}))
    with pytest.raises(ValueError, match="neither an OCI archive"):
        bundle.build_bundle(str(path), [], str(tmp_path / "b.tar"))
    evil = tmp_path / "evil.tar"
    evil.write_bytes(tar_bytes({"../x": b"x"}))
    with pytest.raises(ValueError, match="'..' components are not allowed"):
        bundle.build_bundle(str(evil), [], str(tmp_path / "b.tar"))
