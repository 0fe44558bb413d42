"""Owners, merged tarballs, hard links and the node image manifest."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from rules.private.tools import common, rootfs, tarwriter


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path, "r:*") as tar:
        return {m.name: m for m in tar.getmembers()}


def make_tar(path: Path, build) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        build(tar)
    return path


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", **kw) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 12345
    info.uname = "someone"
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


def test_owner_and_tar_merge(tmp_path):
    def build(tar):
        add(tar, "opt/b", b"bee", uid=7, gid=8, mode=0o600)
        add(tar, "opt/a", type=tarfile.LNKTYPE, linkname="opt/b", uid=7, gid=8)
        add(tar, "opt/c", type=tarfile.LNKTYPE, linkname="opt/b", uid=7, gid=8)
        add(tar, "opt/l", type=tarfile.SYMTYPE, linkname="b")
    extra = make_tar(tmp_path / "extra.tar.gz", build)
    src = tmp_path / "f"
    src.write_bytes(b"f")
    out = tmp_path / "out.tar"
    rootfs.build_rootfs({"entries": [
        {"dest": "/home/app/f", "src": str(src), "uid": 1000, "gid": 1001},
        {"dest": "/", "tar": str(extra)},
    ]}, str(out))
    m = members(out)
    assert list(m) == sorted(m)
    assert (m["home/app/f"].uid, m["home/app/f"].gid) == (1000, 1001)
    assert (m["opt/b"].uid, m["opt/b"].gid, m["opt/b"].mode) == (7, 8, 0o600)
    assert all(i.mtime == 0 and i.uname == "" for i in m.values())
    # "opt/a" sorts before its target: written as a copy; "opt/c" stays a link.
    assert m["opt/a"].isfile() and m["opt/a"].size == 3
    assert m["opt/c"].islnk() and m["opt/c"].linkname == "opt/b"
    assert m["opt/l"].issym()
    with tarfile.open(out) as tar:
        assert tar.extractfile("opt/a").read() == b"bee"


def test_tar_entry_must_go_to_root(tmp_path):
    extra = make_tar(tmp_path / "e.tar.gz", lambda tar: add(tar, "x", b"x"))
    with pytest.raises(ValueError, match="a tarball's 'dest' must be '/'"):
        rootfs.build_rootfs({"entries": [{"dest": "/opt", "tar": str(extra)}]},
                            str(tmp_path / "o.tar"))


def test_tar_conflicting_with_a_file_is_rejected(tmp_path):
    extra = make_tar(tmp_path / "e.tar.gz", lambda tar: add(tar, "x", b"x"))
    src = tmp_path / "f"
    src.write_bytes(b"other")
    with pytest.raises(ValueError, match="added twice with different content"):
        rootfs.build_rootfs({"entries": [{"dest": "/x", "src": str(src)},
                                         {"dest": "/", "tar": str(extra)}]},
                            str(tmp_path / "o.tar"))


def test_dangling_hardlink_rejected(tmp_path):
    writer = tarwriter.TarWriter(str(tmp_path / "o.tar"))
    writer.add_hardlink("a", "missing")
    with pytest.raises(ValueError, match="hard link target 'missing'"):
        writer.close()


def test_bad_owner_rejected(tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"f")
    with pytest.raises(ValueError, match="'uid' must be a non-negative"):
        rootfs.build_rootfs({"entries": [{"dest": "/f", "src": str(src),
                                          "uid": -1}]}, str(tmp_path / "o.tar"))


def bundle_spec(tmp_path: Path, namespace: str, name: str,
                names: list[str]) -> dict:
    src = tmp_path / f"{namespace}-{name}"
    src.write_bytes(f"bundle {namespace} {name}".encode())
    meta = tmp_path / f"{namespace}-{name}.json"
    meta.write_bytes(common.canonical_json({"names": names}))
    return {"namespace": namespace, "path": name, "src": str(src),
            "metadata": str(meta)}


def test_manifest(tmp_path):
    bundles = [bundle_spec(tmp_path, "k8s.io", "b.tar.zst", ["x/b:1"]),
               bundle_spec(tmp_path, "k8s.io", "a.tar", ["x/a:2", "x/a:1"]),
               bundle_spec(tmp_path, "apps", "c.tar.gz", ["x/c:1"])]
    out, manifest_out = tmp_path / "node.tar", tmp_path / "manifest.json"
    rootfs.build_rootfs({"entries": [], "manifest": {
        "dest": "etc/preseed/manifest.json", "preseed_dir": "/containerd/preseed",
        "bundles": bundles}}, str(out), "gzip", str(manifest_out))
    data = manifest_out.read_bytes()
    manifest = json.loads(data)
    assert data == common.canonical_json(manifest) + b"\n"
    assert manifest["version"] == 1
    assert manifest["preseed_dir"] == "/containerd/preseed"
    assert [b["path"] for b in manifest["bundles"]] == [
        "apps/c.tar.gz", "k8s.io/a.tar", "k8s.io/b.tar.zst"]
    first = manifest["bundles"][1]
    content = b"bundle k8s.io a.tar"
    assert first == {"namespace": "k8s.io", "path": "k8s.io/a.tar",
                     "sha256": hashlib.sha256(content).hexdigest(),
                     "size": len(content), "names": ["x/a:1", "x/a:2"]}
    with tarfile.open(out, "r:gz") as tar:
        assert tar.extractfile("etc/preseed/manifest.json").read() == data
        assert tar.extractfile(
            "containerd/preseed/k8s.io/a.tar").read() == content


def test_manifest_rejects_duplicate_paths(tmp_path):
    bundles = [bundle_spec(tmp_path, "k8s.io", "a.tar", ["x"])] * 2
    with pytest.raises(ValueError, match="two bundles have the path 'k8s.io/a.tar'"):
        rootfs.build_rootfs({"entries": [], "manifest": {
            "dest": "m.json", "preseed_dir": "/p", "bundles": bundles}},
            str(tmp_path / "o.tar"))
