import gzip
import io
import os
import tarfile

import pytest

from rules.private.tools import tarwriter

GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        return tar.getmembers()


def contents(data: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for m in tar.getmembers():
            if m.isfile():
                out[m.name] = tar.extractfile(m).read()
    return out


def write(build, compression="none") -> bytes:
    buf = io.BytesIO()
    writer = tarwriter.TarWriter(buf, compression)
    build(writer)
    writer.close()
    return buf.getvalue()


def test_entries_sorted_with_implicit_parents():
    def build(w):
        w.add_file("z/y/file.txt", b"z")
        w.add_symlink("b/link", "../z/y/file.txt")
        w.add_file("a.txt", b"a")
        w.add_directory("m/empty", 0o700)

    infos = members(write(build))
    names = [m.name for m in infos]
    assert names == ["a.txt", "b", "b/link", "m", "m/empty", "z", "z/y",
                     "z/y/file.txt"]
    by_name = {m.name: m for m in infos}
    for parent in ("b", "m", "z", "z/y"):
        assert by_name[parent].isdir()
        assert by_name[parent].mode == 0o755
    assert by_name["m/empty"].mode == 0o700
    assert by_name["b/link"].issym()
    assert by_name["b/link"].linkname == "../z/y/file.txt"


def test_order_of_adding_does_not_matter():
    files = [("c", b"3"), ("a/b", b"2"), ("a/a", b"1"), ("b", b"0")]

    def forward(w):
        for name, data in files:
            w.add_file(name, data)

    def backward(w):
        for name, data in reversed(files):
            w.add_file(name, data)

    assert write(forward) == write(backward)


def test_metadata_is_zeroed(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"hello")
    os.utime(src, (123456789, 123456789))

    def build(w):
        w.add_file("f", src, 0o640)
        w.add_file("g", b"data")
        w.add_directory("d")
        w.add_symlink("l", "f")

    for m in members(write(build)):
        assert m.mtime == 0
        assert m.uid == 0 and m.gid == 0
        assert m.uname == "" and m.gname == ""
    modes = {m.name: m.mode for m in members(write(build))}
    assert modes == {"d": 0o755, "f": 0o640, "g": 0o644, "l": 0o777}


def test_gnu_format_and_record_padding():
    data = write(lambda w: w.add_file("x", b"1"))
    assert data[257:265] == b"ustar  \0"
    assert len(data) % tarfile.RECORDSIZE == 0
    empty = write(lambda w: None)
    assert empty == b"\0" * tarfile.RECORDSIZE


def test_names_are_cleaned():
    def build(w):
        w.add_file("/abs/file", b"1")
        w.add_file("./rel//file", b"2")

    assert [m.name for m in members(write(build))] == [
        "abs", "abs/file", "rel", "rel/file"]


@pytest.mark.parametrize("name", ["../x", "a/../b", "a/..", "", "/", "./"])
def test_bad_names_rejected(name):
    with pytest.raises(ValueError, match="path"):
        tarwriter.TarWriter(io.BytesIO()).add_file(name, b"")


def test_identical_duplicates_are_merged(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"same")

    def build(w):
        w.add_file("f", b"same")
        w.add_file("f", src)
        w.add_directory("d")
        w.add_directory("d")
        w.add_symlink("l", "f")
        w.add_symlink("l", "f")

    assert [m.name for m in members(write(build))] == ["d", "f", "l"]


@pytest.mark.parametrize("first, second", [
    (lambda w: w.add_file("p/x", b"1"), lambda w: w.add_file("p/x", b"2")),
    (lambda w: w.add_file("p/x", b"1"),
     lambda w: w.add_file("p/x", b"1", 0o755)),
    (lambda w: w.add_symlink("p/x", "a"), lambda w: w.add_symlink("p/x", "b")),
    (lambda w: w.add_directory("p/x", 0o700), lambda w: w.add_directory("p/x")),
    (lambda w: w.add_file("p/x", b"1"), lambda w: w.add_directory("p/x")),
    (lambda w: w.add_file("p/x/y", b"1"), lambda w: w.add_file("p/x", b"1")),
    (lambda w: w.add_file("p/x", b"1"), lambda w: w.add_file("p/x/y", b"1")),
])
def test_conflicting_duplicates_rejected(first, second):
    writer = tarwriter.TarWriter(io.BytesIO())
    first(writer)
    with pytest.raises(ValueError, match="p/x"):
        second(writer)


def test_duplicate_path_with_different_content(tmp_path):
    (tmp_path / "one").write_bytes(b"1")
    (tmp_path / "two").write_bytes(b"2")
    writer = tarwriter.TarWriter(io.BytesIO())
    writer.add_file("f", tmp_path / "one")
    with pytest.raises(ValueError, match="'f'"):
        writer.add_file("f", tmp_path / "two")


def test_explicit_directory_overrides_implicit_parent():
    def build(w):
        w.add_file("d/f", b"1")
        w.add_directory("d", 0o750)

    assert {m.name: m.mode for m in members(write(build))}["d"] == 0o750


def test_large_file_streamed_from_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(tarwriter, "CHUNK_SIZE", 4096)
    payload = os.urandom(3 * 4096 + 17)
    src = tmp_path / "big"
    src.write_bytes(payload)
    buf = io.BytesIO()
    writer = tarwriter.TarWriter(buf)
    writer.add_file("big", src)
    src.write_bytes(payload[::-1])  # contents are only read at close
    writer.close()
    assert contents(buf.getvalue()) == {"big": payload[::-1]}


def test_expected_digest_checked_while_copying(tmp_path, monkeypatch):
    import hashlib
    monkeypatch.setattr(tarwriter, "CHUNK_SIZE", 4096)
    payload = os.urandom(3 * 4096 + 17)
    good = "sha256:" + hashlib.sha256(payload).hexdigest()
    src = tmp_path / "blob"
    src.write_bytes(payload)
    out = tmp_path / "ok.tar"
    with tarwriter.TarWriter(str(out)) as writer:
        writer.add_file("blob", src, sha256=good)
    assert contents(out.read_bytes()) == {"blob": payload}

    # Same size, one byte changed after it was added: found while copying,
    # and the half-written output is removed.
    src.write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))
    bad = tmp_path / "bad.tar"
    writer = tarwriter.TarWriter(str(bad))
    writer.add_file("a-first", b"written before the bad blob")
    writer.add_file("blob", src, sha256=good)
    with pytest.raises(ValueError, match=f"file {src}: content has digest "
                                         f"sha256:[0-9a-f]{{64}}, expected {good}"):
        writer.close()
    assert not bad.exists()


def test_missing_source_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        tarwriter.TarWriter(io.BytesIO()).add_file("x", tmp_path / "nope")


def test_directory_source_rejected_for_add_file(tmp_path):
    with pytest.raises(ValueError, match="not a regular file"):
        tarwriter.TarWriter(io.BytesIO()).add_file("x", tmp_path)


def test_long_names_and_targets():
    name = "/".join(["component%02d" % i for i in range(12)])
    target = "t" * 150

    def build(w):
        w.add_file(name, b"long")
        w.add_symlink("link", target)

    data = write(build)
    by_name = {m.name: m for m in members(data)}
    assert by_name["link"].linkname == target
    assert contents(data)[name] == b"long"
    assert write(build) == data


def test_gzip_header_is_fixed_and_content_matches():
    def build(w):
        w.add_file("a", b"x" * 1000)

    compressed = write(build, "gzip")
    assert compressed[:10] == GZIP_HEADER
    assert gzip.decompress(compressed) == write(build)


def test_gzip_to_path(tmp_path):
    out = tmp_path / "out.tar.gz"
    writer = tarwriter.TarWriter(out, "gzip")
    writer.add_file("a", b"1")
    writer.close()
    assert out.read_bytes()[:10] == GZIP_HEADER
    assert contents(out.read_bytes()) == {"a": b"1"}


def test_unknown_compression():
    with pytest.raises(ValueError, match="compression"):
        tarwriter.TarWriter(io.BytesIO(), "xz")


def test_caller_fileobj_is_left_open():
    buf = io.BytesIO()
    with tarwriter.TarWriter(buf) as writer:
        writer.add_file("a", b"1")
    assert not buf.closed
    assert contents(buf.getvalue()) == {"a": b"1"}


def make_source(root, mtime: int) -> None:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "bin" / "tool", 0o755 & ~_umask())
    (root / "data.txt").write_bytes(b"data" * 1000)
    for path in (root / "bin" / "tool", root / "data.txt", root / "bin"):
        os.utime(path, (mtime, mtime))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_reproducible_across_dirs_mtimes_and_umask(tmp_path, compression):
    outputs = []
    for i, (mask, mtime) in enumerate([(0o022, 1000), (0o077, 2000000000)]):
        old = os.umask(mask)
        try:
            root = tmp_path / f"run{i}"
            make_source(root, mtime)
            out = tmp_path / f"out{i}.tar"
            writer = tarwriter.TarWriter(out, compression)
            writer.add_tree("opt/app", root)
            writer.add_file("etc/conf", root / "data.txt")
            writer.close()
            outputs.append(out.read_bytes())
        finally:
            os.umask(old)
    assert outputs[0] == outputs[1]


def test_add_tree(tmp_path):
    root = tmp_path / "tree"
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "run.sh").write_bytes(b"run")
    os.chmod(root / "pkg" / "run.sh", 0o700)
    (root / "pkg" / "sub" / "lib.py").write_bytes(b"lib")
    os.chmod(root / "pkg" / "sub" / "lib.py", 0o600)
    os.symlink("sub/lib.py", root / "pkg" / "inside")
    os.symlink("sub", root / "pkg" / "dirlink")
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"outside")
    os.symlink(outside, root / "absolute")
    os.symlink("../outside.txt", root / "escaping")
    external_dir = tmp_path / "external"
    external_dir.mkdir()
    (external_dir / "e").write_bytes(b"e")
    os.symlink(external_dir, root / "extdir")

    def build(w):
        w.add_tree("/srv/app", root)

    data = write(build)
    by_name = {m.name: m for m in members(data)}
    assert [m.name for m in members(data)] == sorted(by_name)
    assert by_name["srv/app"].isdir()
    assert by_name["srv/app/pkg/run.sh"].mode == 0o755
    assert by_name["srv/app/pkg/sub/lib.py"].mode == 0o644
    assert by_name["srv/app/pkg/sub"].mode == 0o755
    assert by_name["srv/app/pkg/inside"].issym()
    assert by_name["srv/app/pkg/inside"].linkname == "sub/lib.py"
    assert by_name["srv/app/pkg/dirlink"].issym()
    assert by_name["srv/app/absolute"].isfile()
    assert by_name["srv/app/escaping"].isfile()
    assert by_name["srv/app/extdir"].isdir()
    files = contents(data)
    assert files["srv/app/absolute"] == b"outside"
    assert files["srv/app/escaping"] == b"outside"
    assert files["srv/app/extdir/e"] == b"e"


def test_add_tree_dangling_symlink(tmp_path):
    os.symlink("missing", tmp_path / "broken")
    with pytest.raises(ValueError, match="dangling"):
        tarwriter.TarWriter(io.BytesIO()).add_tree("x", tmp_path)


def test_add_tree_symlink_cycle(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(root, root / "loop")
    with pytest.raises(ValueError, match="cycle"):
        tarwriter.TarWriter(io.BytesIO()).add_tree("x", root)
