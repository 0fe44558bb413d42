import gzip
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from rules.private.tools import common, rootfs

REPO_ROOT = Path(__file__).resolve().parents[4]


def read(path: Path) -> tuple[dict[str, tarfile.TarInfo], dict[str, bytes]]:
    with tarfile.open(path, mode="r:*") as tar:
        infos = tar.getmembers()
        names = [m.name for m in infos]
        assert names == sorted(names)
        assert len(names) == len(set(names))
        files = {m.name: tar.extractfile(m).read() for m in infos if m.isfile()}
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and
               m.uname == "" and m.gname == "" for m in infos)
    return {m.name: m for m in infos}, files


@pytest.fixture
def bundle_file(tmp_path) -> Path:
    path = tmp_path / "hello.tar"
    path.write_bytes(b"bundle bytes")
    return path


def test_entries(tmp_path, bundle_file):
    out = tmp_path / "node.tar"
    rootfs.build_rootfs({"entries": [
        {"dest": "/containerd/preseed/k8s.io/hello.tar",
         "src": str(bundle_file), "mode": "0644"},
        {"dest": "usr/bin/x", "symlink": "../lib/x"},
        {"dest": "var/lib/x", "directory": True, "mode": "0700"},
        {"dest": "var/empty", "directory": True},
    ]}, str(out))
    infos, files = read(out)
    assert list(infos) == [
        "containerd", "containerd/preseed", "containerd/preseed/k8s.io",
        "containerd/preseed/k8s.io/hello.tar", "usr", "usr/bin", "usr/bin/x",
        "var", "var/empty", "var/lib", "var/lib/x"]
    assert files == {"containerd/preseed/k8s.io/hello.tar": b"bundle bytes"}
    assert infos["containerd/preseed/k8s.io/hello.tar"].mode == 0o644
    assert infos["usr/bin/x"].issym()
    assert infos["usr/bin/x"].linkname == "../lib/x"
    assert infos["var/lib/x"].isdir() and infos["var/lib/x"].mode == 0o700
    assert infos["var/empty"].mode == 0o755
    assert infos["containerd"].mode == 0o755


def test_directory_src_recursion(tmp_path):
    runfiles = tmp_path / "hello.runfiles"
    (runfiles / "_main" / "app").mkdir(parents=True)
    (runfiles / "_main" / "app" / "hello").write_bytes(b"#!/usr/bin/env python3\n")
    os.chmod(runfiles / "_main" / "app" / "hello", 0o750)
    (runfiles / "_main" / "app" / "lib.py").write_bytes(b"x = 1\n")
    os.chmod(runfiles / "_main" / "app" / "lib.py", 0o640)
    os.symlink("app/lib.py", runfiles / "_main" / "alias.py")
    external = tmp_path / "external.py"
    external.write_bytes(b"external\n")
    os.symlink(external, runfiles / "_main" / "ext.py")
    out = tmp_path / "node.tar"
    rootfs.build_rootfs({"entries": [
        {"dest": "/opt/hello.runfiles", "src": str(runfiles)}]}, str(out))
    infos, files = read(out)
    assert list(infos) == [
        "opt", "opt/hello.runfiles", "opt/hello.runfiles/_main",
        "opt/hello.runfiles/_main/alias.py", "opt/hello.runfiles/_main/app",
        "opt/hello.runfiles/_main/app/hello",
        "opt/hello.runfiles/_main/app/lib.py",
        "opt/hello.runfiles/_main/ext.py"]
    base = "opt/hello.runfiles/_main/"
    assert infos[base + "app/hello"].mode == 0o755
    assert infos[base + "app/lib.py"].mode == 0o644
    assert infos[base + "app"].mode == 0o755
    assert infos[base + "alias.py"].issym()
    assert infos[base + "alias.py"].linkname == "app/lib.py"
    assert files[base + "ext.py"] == b"external\n"


def test_default_file_mode(tmp_path):
    tool = tmp_path / "tool"
    tool.write_bytes(b"t")
    os.chmod(tool, 0o700)
    data = tmp_path / "data"
    data.write_bytes(b"d")
    out = tmp_path / "node.tar"
    rootfs.build_rootfs({"entries": [{"dest": "t", "src": str(tool)},
                                     {"dest": "d", "src": str(data)}]}, str(out))
    infos, _ = read(out)
    assert infos["t"].mode == 0o755 and infos["d"].mode == 0o644


def test_gzip(tmp_path, bundle_file):
    plain, packed = tmp_path / "node.tar", tmp_path / "node.tar.gz"
    spec = {"entries": [{"dest": "a/b.tar", "src": str(bundle_file)}]}
    rootfs.build_rootfs(spec, str(plain))
    rootfs.build_rootfs(spec, str(packed), "gzip")
    assert packed.read_bytes()[:10] == (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()


def test_reproducible(tmp_path):
    outputs = []
    for i, (mask, mtime) in enumerate([(0o022, 5), (0o077, 1600000000)]):
        old = os.umask(mask)
        try:
            work = tmp_path / f"run{i}"
            (work / "tree" / "sub").mkdir(parents=True)
            (work / "tree" / "sub" / "f").write_bytes(b"f" * 100000)
            (work / "b.tar").write_bytes(b"bundle")
            for p in (work / "tree" / "sub" / "f", work / "tree" / "sub",
                      work / "b.tar"):
                os.utime(p, (mtime, mtime))
            out = work / "node.tar"
            rootfs.build_rootfs({"entries": [
                {"dest": "opt/tree", "src": str(work / "tree")},
                {"dest": "containerd/preseed/k8s.io/b.tar",
                 "src": str(work / "b.tar"), "mode": "0644"},
            ]}, str(out), "gzip")
            outputs.append(out.read_bytes())
        finally:
            os.umask(old)
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("entry, message", [
    ({"dest": "../etc/passwd", "symlink": "x"}, "'..'"),
    ({"dest": "/a/../../b", "directory": True}, "'..'"),
    ({"dest": "/", "directory": True}, "empty path"),
    ({"dest": "a"}, "exactly one of"),
    ({"dest": "a", "symlink": "x", "directory": True}, "exactly one of"),
    ({"dest": "a", "symlink": "x", "mode": "0644"}, "not allowed for a symlink"),
    ({"dest": "a", "directory": False}, "must be true"),
    ({"dest": "a", "directory": True, "mode": 755}, "octal"),
    ({"dest": "a", "directory": True, "mode": "99"}, "octal"),
    ({"dest": "a", "directory": True, "owner": "root"}, "unknown key 'owner'"),
    ({"src": "x", "mode": "0644"}, "missing key 'dest'"),
])
def test_bad_entries(tmp_path, entry, message):
    with pytest.raises(ValueError, match=message) as exc:
        rootfs.build_rootfs({"entries": [entry]}, str(tmp_path / "o.tar"))
    assert str(exc.value).startswith("spec: entries[0]")
    assert not (tmp_path / "o.tar").exists()


def test_mode_not_allowed_for_directory_src(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        rootfs.build_rootfs({"entries": [
            {"dest": "a", "src": str(tmp_path), "mode": "0755"}]},
            str(tmp_path / "o.tar"))


def test_conflicting_entries(tmp_path, bundle_file):
    with pytest.raises(ValueError, match="spec: entries\\[1\\]: path 'a/b'"):
        rootfs.build_rootfs({"entries": [
            {"dest": "a/b", "src": str(bundle_file)},
            {"dest": "/a/b", "symlink": "c"}]}, str(tmp_path / "o.tar"))


def test_cli_runs_as_script(tmp_path, bundle_file):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"entries": [
        {"dest": "containerd/preseed/k8s.io/hello.tar",
         "src": str(bundle_file)}]}))
    out = tmp_path / "node.tar"
    script = REPO_ROOT / "rules" / "private" / "tools" / "rootfs.py"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT)] + sys.path))
    subprocess.run([sys.executable, str(script), "--spec", str(spec),
                    "--output", str(out), "--compression", "none"],
                   check=True, cwd=tmp_path, env=env)
    _, files = read(out)
    assert files == {"containerd/preseed/k8s.io/hello.tar": b"bundle bytes"}

    spec.write_text(json.dumps({"entries": [{"dest": "../x", "symlink": "y"}]}))
    result = subprocess.run([sys.executable, str(script), "--spec", str(spec),
                             "--output", str(out)],
                            cwd=tmp_path, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 1
    assert result.stderr == (
        "rootfs: spec: entries[0]: path '../x': '..' components are not "
        "allowed\n")


def test_cli_missing_src(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"entries": [{"dest": "x", "src": "nope"}]}))
    with pytest.raises(SystemExit) as exc:
        common.run("rootfs", rootfs.main,
                   ["--spec", str(spec), "--output", str(tmp_path / "o.tar")])
    assert str(exc.value.code) == "rootfs: file nope: No such file or directory"
