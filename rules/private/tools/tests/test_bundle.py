import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from rules.private.tools import bundle, common, oci_layout


@pytest.fixture
def layout(tmp_path) -> Path:
    src = tmp_path / "hello"
    src.write_bytes(b"hello binary")
    out = tmp_path / "layout"
    oci_layout.build_layout({
        "files": [{"src": str(src), "dest": "/app/hello", "mode": "0755"}],
        "entrypoint": ["/app/hello"],
        "os": "linux",
        "architecture": "amd64",
    }, str(out))
    return out


def layout_manifest(layout: Path) -> dict:
    return json.loads((layout / "index.json").read_bytes())["manifests"][0]


def read_archive(path: Path) -> tuple[list[tarfile.TarInfo], dict[str, bytes]]:
    with tarfile.open(path, mode="r:") as tar:
        infos = tar.getmembers()
        files = {m.name: tar.extractfile(m).read() for m in infos if m.isfile()}
    return infos, files


def test_bundle_contents(tmp_path, layout):
    out = tmp_path / "bundle.tar"
    bundle.build_bundle(str(layout), ["me/hello:1", "hello",
                                      "docker.io/library/hello:latest"],
                        str(out))
    infos, files = read_archive(out)
    blob_files = sorted(p.name for p in (layout / "blobs" / "sha256").iterdir())
    assert [m.name for m in infos] == (
        ["blobs", "blobs/sha256"]
        + [f"blobs/sha256/{h}" for h in blob_files]
        + ["index.json", "oci-layout"])
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in infos)
    assert files["oci-layout"] == b'{"imageLayoutVersion":"1.0.0"}'
    for h in blob_files:
        data = files[f"blobs/sha256/{h}"]
        assert data == (layout / "blobs" / "sha256" / h).read_bytes()
        assert hashlib.sha256(data).hexdigest() == h

    index = json.loads(files["index.json"])
    assert files["index.json"] == common.canonical_json(index)
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    desc = layout_manifest(layout)
    expected = []
    for name, tag in [("docker.io/library/hello:latest", "latest"),
                      ("docker.io/me/hello:1", "1")]:
        expected.append(dict(desc, annotations={
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": tag}))
    assert index["manifests"] == expected


def test_bundle_is_plain_tar_and_reproducible(tmp_path, layout):
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    bundle.build_bundle(str(layout), ["b", "a"], str(first))
    copy = tmp_path / "elsewhere" / "layout"
    shutil.copytree(layout, copy)
    bundle.build_bundle(str(copy), ["a", "b", "a:latest"], str(second))
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes()[:2] != b"\x1f\x8b"
    assert first.read_bytes()[257:265] == b"ustar  \0"


def test_existing_annotations_kept(tmp_path, layout):
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"][0]["annotations"] = {
        "org.opencontainers.image.ref.name": "old", "keep": "me"}
    (layout / "index.json").write_text(json.dumps(index))
    out = tmp_path / "bundle.tar"
    bundle.build_bundle(str(layout), ["x:2"], str(out))
    _, files = read_archive(out)
    annotations = json.loads(files["index.json"])["manifests"][0]["annotations"]
    assert annotations == {"keep": "me",
                           "io.containerd.image.name": "docker.io/library/x:2",
                           "org.opencontainers.image.ref.name": "2"}


def test_corrupt_blob_rejected(tmp_path, layout):
    manifest = json.loads((layout / "blobs" / "sha256" / layout_manifest(
        layout)["digest"].split(":")[1]).read_bytes())
    layer = layout / "blobs" / "sha256" / manifest["layers"][0][
        "digest"].split(":")[1]
    data = bytearray(layer.read_bytes())
    data[-1] ^= 0xFF
    layer.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="content has digest") as exc:
        bundle.build_bundle(str(layout), ["x"], str(tmp_path / "b.tar"))
    assert str(layer) in str(exc.value)
    assert not (tmp_path / "b.tar").exists()


def test_corruption_found_while_copying_removes_output(tmp_path, layout,
                                                      monkeypatch):
    # The layer is read once: its digest is checked as it is copied into the
    # archive, after other members were already written.
    manifest = json.loads((layout / "blobs" / "sha256" / layout_manifest(
        layout)["digest"].split(":")[1]).read_bytes())
    layer = layout / "blobs" / "sha256" / manifest["layers"][0][
        "digest"].split(":")[1]
    reads = []
    real_open = open

    def counting_open(path, *args, **kwargs):
        if str(path) == str(layer):
            reads.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    out = tmp_path / "ok.tar"
    bundle.build_bundle(str(layout), ["x"], str(out))
    assert len(reads) == 1  # verified and copied in one pass
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0x01
    layer.write_bytes(bytes(data))
    bad = tmp_path / "bad.tar"
    with pytest.raises(ValueError, match="content has digest") as exc:
        bundle.build_bundle(str(layout), ["x"], str(bad))
    assert str(layer) in str(exc.value)
    assert manifest["layers"][0]["digest"] in str(exc.value)
    assert not bad.exists()


def test_size_mismatch_rejected(tmp_path, layout):
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"][0]["size"] += 1
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="descriptor says"):
        bundle.build_bundle(str(layout), ["x"], str(tmp_path / "b.tar"))


def test_missing_blob_rejected(tmp_path, layout):
    desc = layout_manifest(layout)
    (layout / "blobs" / "sha256" / desc["digest"].split(":")[1]).unlink()
    with pytest.raises(FileNotFoundError):
        bundle.build_bundle(str(layout), ["x"], str(tmp_path / "b.tar"))


@pytest.mark.parametrize("digest", [
    "sha256:../../etc/passwd", "sha512:" + "a" * 128, "sha256:" + "A" * 64, 5])
def test_bad_digest_rejected(tmp_path, layout, digest):
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"][0]["digest"] = digest
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="digest"):
        bundle.build_bundle(str(layout), ["x"], str(tmp_path / "b.tar"))


def test_no_image_rejected(tmp_path, layout):
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"] = []
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="no image descriptors"):
        bundle.build_bundle(str(layout), ["x"], str(tmp_path / "b.tar"))


def test_names_need_exactly_one_image(tmp_path, layout):
    index = json.loads((layout / "index.json").read_bytes())
    other = dict(index["manifests"][0], digest="sha256:" + "0" * 64)
    index["manifests"].append(other)
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="expected exactly one image, found 2"):
        bundle.build_bundle(str(layout), ["x"], str(tmp_path / "b.tar"))


def test_names_required_and_valid(tmp_path, layout):
    with pytest.raises(ValueError, match="carries no names; give it names"):
        bundle.build_bundle(str(layout), [], str(tmp_path / "b.tar"))
    with pytest.raises(ValueError, match="lowercase"):
        bundle.build_bundle(str(layout), ["ok", "Bad"], str(tmp_path / "b.tar"))


def test_nested_index_blobs_collected(tmp_path, layout):
    blobs = layout / "blobs" / "sha256"
    inner = layout_manifest(layout)
    nested = common.canonical_json({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [inner]})
    digest = hashlib.sha256(nested).hexdigest()
    (blobs / digest).write_bytes(nested)
    (layout / "index.json").write_bytes(common.canonical_json({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                       "digest": "sha256:" + digest, "size": len(nested)}]}))
    out = tmp_path / "b.tar"
    bundle.build_bundle(str(layout), ["x"], str(out))
    _, files = read_archive(out)
    assert sorted(n for n in files if n.startswith("blobs/")) == sorted(
        f"blobs/sha256/{p.name}" for p in blobs.iterdir())


def test_cli(tmp_path, layout):
    out = tmp_path / "bundle.tar"
    bundle.main(["--layout", str(layout), "--name", "hello", "--name",
                 "hello:2", "--output", str(out)])
    _, files = read_archive(out)
    names = [m["annotations"]["io.containerd.image.name"]
             for m in json.loads(files["index.json"])["manifests"]]
    assert names == ["docker.io/library/hello:2",
                     "docker.io/library/hello:latest"]


def test_cli_error_is_one_line(tmp_path, layout):
    with pytest.raises(SystemExit) as exc:
        common.run("bundle", bundle.main, ["--layout", str(layout), "--name",
                                           "Bad", "--output", "x.tar"])
    assert str(exc.value.code) == (
        "bundle: invalid reference 'Bad': repository name must be lowercase")
