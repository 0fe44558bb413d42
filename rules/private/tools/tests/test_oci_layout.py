import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from rules.private.tools import common, oci_layout


def make_spec(src: Path, **overrides) -> dict:
    spec = {
        "files": [{"src": str(src), "dest": "/app/hello", "mode": "0755"}],
        "entrypoint": ["/app/hello"],
        "cmd": ["--greet"],
        "env": {"PATH": "/bin", "A": "b"},
        "workdir": "/app",
        "user": "65532",
        "labels": {"k": "v"},
        "annotations": {"org.example": "x"},
        "os": "linux",
        "architecture": "amd64",
        "variant": "",
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def hello(tmp_path) -> Path:
    src = tmp_path / "hello"
    src.write_bytes(b"\x7fELF fake static binary")
    return src


def read_blob(layout: Path, digest: str) -> bytes:
    algorithm, hex_digest = digest.split(":")
    assert algorithm == "sha256"
    data = (layout / "blobs" / "sha256" / hex_digest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hex_digest
    return data


def load_canonical(data: bytes):
    obj = json.loads(data)
    assert data == common.canonical_json(obj)
    assert not data.endswith(b"\n")
    return obj


def load_image(layout: Path):
    index = load_canonical((layout / "index.json").read_bytes())
    desc = index["manifests"][0]
    manifest_bytes = read_blob(layout, desc["digest"])
    assert len(manifest_bytes) == desc["size"]
    manifest = load_canonical(manifest_bytes)
    config = load_canonical(read_blob(layout, manifest["config"]["digest"]))
    layer = read_blob(layout, manifest["layers"][0]["digest"])
    return index, manifest, config, layer


def test_layout_structure(tmp_path, hello):
    out = tmp_path / "layout"
    oci_layout.build_layout(make_spec(hello), str(out))
    assert (out / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    index, manifest, config, layer = load_image(out)

    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert len(index["manifests"]) == 1
    desc = index["manifests"][0]
    assert desc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert "annotations" not in desc
    assert desc["platform"] == {"architecture": "amd64", "os": "linux"}

    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == desc["mediaType"]
    assert manifest["annotations"] == {"org.example": "x"}
    assert manifest["config"]["mediaType"] == (
        "application/vnd.oci.image.config.v1+json")
    assert len(manifest["layers"]) == 1
    layer_desc = manifest["layers"][0]
    assert layer_desc["mediaType"] == (
        "application/vnd.oci.image.layer.v1.tar+gzip")
    assert layer_desc["size"] == len(layer)

    assert config == {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["A=b", "PATH=/bin"],
            "Entrypoint": ["/app/hello"],
            "Cmd": ["--greet"],
            "WorkingDir": "/app",
            "User": "65532",
            "Labels": {"k": "v"},
        },
        "rootfs": {"type": "layers", "diff_ids": [
            "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()]},
        "history": [{"created": "1970-01-01T00:00:00Z",
                     "created_by": "preseed oci_image"}],
    }
    blobs = sorted(p.name for p in (out / "blobs" / "sha256").iterdir())
    assert blobs == sorted(d.split(":")[1] for d in (
        desc["digest"], manifest["config"]["digest"], layer_desc["digest"]))


def test_layer_contents(tmp_path, hello):
    out = tmp_path / "layout"
    oci_layout.build_layout(make_spec(hello), str(out))
    _, _, _, layer = load_image(out)
    assert layer[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tar:
        infos = tar.getmembers()
        assert [m.name for m in infos] == ["app", "app/hello"]
        assert infos[0].isdir() and infos[0].mode == 0o755
        assert infos[1].mode == 0o755
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in infos)
        assert tar.extractfile(infos[1]).read() == hello.read_bytes()


def test_default_mode_follows_executable_bit(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"p")
    os.chmod(plain, 0o600)
    tool = tmp_path / "tool"
    tool.write_bytes(b"t")
    os.chmod(tool, 0o700)
    spec = make_spec(plain, files=[{"src": str(plain), "dest": "p"},
                                   {"src": str(tool), "dest": "t"}])
    oci_layout.build_layout(spec, str(tmp_path / "out"))
    _, _, _, layer = load_image(tmp_path / "out")
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tar:
        assert {m.name: m.mode for m in tar.getmembers()} == {
            "p": 0o644, "t": 0o755}


def test_directory_src_added_recursively(tmp_path, hello):
    tree = tmp_path / "tree"
    (tree / "lib").mkdir(parents=True)
    (tree / "lib" / "mod.py").write_bytes(b"x = 1\n")
    spec = make_spec(hello, files=[{"src": str(tree), "dest": "/opt/app"}])
    oci_layout.build_layout(spec, str(tmp_path / "out"))
    _, _, _, layer = load_image(tmp_path / "out")
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tar:
        assert tar.getnames() == ["opt", "opt/app", "opt/app/lib",
                                  "opt/app/lib/mod.py"]


def test_empty_image_has_one_empty_layer(tmp_path):
    spec = {"os": "linux", "architecture": "arm64", "variant": "v8",
            "cmd": ["/x"]}
    oci_layout.build_layout(spec, str(tmp_path / "out"))
    index, manifest, config, layer = load_image(tmp_path / "out")
    assert gzip.decompress(layer) == b"\0" * tarfile.RECORDSIZE
    assert config["config"] == {"Cmd": ["/x"]}
    assert config["variant"] == "v8"
    assert index["manifests"][0]["platform"] == {
        "architecture": "arm64", "os": "linux", "variant": "v8"}
    assert "annotations" not in manifest


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_reproducible(tmp_path):
    layouts = []
    for i, (mask, mtime) in enumerate([(0o022, 1), (0o077, 1700000000)]):
        old = os.umask(mask)
        try:
            work = tmp_path / f"run{i}"
            work.mkdir()
            src = work / "hello"
            src.write_bytes(b"binary" * 5000)
            os.utime(src, (mtime, mtime))
            out = work / "layout"
            oci_layout.build_layout(make_spec(src), str(out))
            layouts.append(tree_bytes(out))
        finally:
            os.umask(old)
    assert layouts[0] == layouts[1]
    assert len(layouts[0]) == 5  # oci-layout, index.json, three blobs


def test_no_temporary_files_left(tmp_path, hello):
    out = tmp_path / "layout"
    oci_layout.build_layout(make_spec(hello), str(out))
    names = [p.name for p in (out / "blobs" / "sha256").iterdir()]
    assert all(len(n) == 64 for n in names)


def test_failed_layer_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "layout"
    spec = make_spec(tmp_path, files=[{"src": str(tmp_path / "missing"),
                                       "dest": "x"}])
    with pytest.raises(FileNotFoundError):
        oci_layout.build_layout(spec, str(out))
    assert list((out / "blobs" / "sha256").iterdir()) == []


@pytest.mark.parametrize("change, message", [
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"os": ""}, "must not be empty"),
    ({"env": {"A=B": "c"}}, "environment variable"),
    ({"env": {"A": 1}}, "'env'"),
    ({"cmd": "not a list"}, "'cmd'"),
    ({"files": [{"src": "a", "dest": "b", "mode": "rwx"}]}, "octal"),
    ({"files": [{"src": "a"}]}, "missing key 'dest'"),
    ({"files": [{"src": "a", "dest": "../b"}]}, "'..'"),
])
def test_bad_spec(tmp_path, hello, change, message):
    with pytest.raises(ValueError, match=message):
        oci_layout.build_layout(make_spec(hello, **change), str(tmp_path / "o"))


def test_missing_platform(tmp_path):
    spec = make_spec(Path("x"))
    del spec["architecture"]
    with pytest.raises(ValueError, match="missing key 'architecture'"):
        oci_layout.build_layout(spec, str(tmp_path / "o"))


def test_cli(tmp_path, hello):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(make_spec(hello)))
    out = tmp_path / "layout"
    oci_layout.main(["--spec", str(spec_path), "--output", str(out)])
    assert (out / "index.json").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "spec.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit) as exc:
        common.run("oci_layout", oci_layout.main,
                   ["--spec", str(bad), "--output", str(tmp_path / "o")])
    message = str(exc.value.code)
    assert message.startswith(f"oci_layout: file {bad}: invalid JSON")
    assert "\n" not in message
    with pytest.raises(SystemExit) as exc:
        common.run("oci_layout", oci_layout.main,
                   ["--spec", str(tmp_path / "nope.json"), "--output", "o"])
    assert str(exc.value.code) == (
        f"oci_layout: file {tmp_path / 'nope.json'}: No such file or directory")
