"""Reproducible tar writer.

Every entry gets mtime 0, empty uname/gname and the numeric owner it was
added with (root by default). Headers use
tarfile.GNU_FORMAT: it has no time fields besides the (zeroed) mtime, and
long names or link targets are written as GNU LongLink records, so the
output depends only on the entries. Entries are written sorted by name,
whatever order they were added in, and every parent directory is emitted
(mode 0755) unless it was added explicitly. File contents given as paths
are only read, in 1 MiB chunks, when the archive is closed; a file added
with an expected sha256 is verified while it is copied, and a mismatch
fails close() (a partial output file is removed).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import posixpath
import stat
import tarfile
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Iterator, Literal

from rules.private.tools import compression as _compression

CHUNK_SIZE = 1 << 20
BLOCK_SIZE = tarfile.BLOCKSIZE
RECORD_SIZE = tarfile.RECORDSIZE
GZIP_LEVEL = _compression.GZIP_LEVEL

Compression = Literal["none", "gzip", "zstd"]
Source = bytes | bytearray | memoryview | str | os.PathLike


def clean_name(name: str) -> str:
    """Returns name without leading "/" or "./" and without empty parts."""
    if "\0" in name:
        raise ValueError(f"path {name!r}: contains a NUL character")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"path {name!r}: '..' components are not allowed")
    if not parts:
        raise ValueError(f"path {name!r}: empty path")
    return "/".join(parts)


def open_gzip(raw: BinaryIO) -> gzip.GzipFile:
    """Returns a gzip writer over raw with a fixed header (no name, mtime 0)."""
    return _compression.open_gzip(raw)


@dataclasses.dataclass
class _Entry:
    kind: Literal["file", "dir", "symlink", "hardlink"]
    mode: int
    data: bytes | None = None
    src: str | None = None
    target: str = ""
    implicit: bool = False
    uid: int = 0
    gid: int = 0
    sha256: str | None = None  # "sha256:<hex>" the content must hash to


def _open_source(entry: _Entry) -> BinaryIO:
    if entry.data is not None:
        return io.BytesIO(entry.data)
    assert entry.src is not None
    return open(entry.src, "rb")


def _same_content(a: _Entry, b: _Entry) -> bool:
    if a.data is not None and b.data is not None:
        return a.data == b.data
    with _open_source(a) as fa, _open_source(b) as fb:
        while True:
            ca, cb = fa.read(CHUNK_SIZE), fb.read(CHUNK_SIZE)
            if ca != cb:
                return False
            if not ca:
                return True


def _stays_inside(rel: str, target: str, path: str, root: str) -> bool:
    """Whether a symlink at rel (relative to the tree) points inside it."""
    if posixpath.isabs(target):
        return False
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    if joined == ".." or joined.startswith("../"):
        return False
    resolved = os.path.realpath(path)
    return resolved == root or resolved.startswith(root + os.sep)


def _owner(name: str, uid: int, gid: int) -> tuple[int, int]:
    for value in (uid, gid):
        if not isinstance(value, int) or not 0 <= value < 1 << 21:
            raise ValueError(f"path {name!r}: invalid owner id {value!r}")
    return uid, gid


def iter_tar(path: str) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """Yields each member of a (possibly compressed) tarball, with file data."""
    with _compression.open_reader(path) as raw:
        try:
            with tarfile.open(fileobj=raw, mode="r|") as tar:
                for member in tar:
                    data = None
                    if member.isfile():
                        f = tar.extractfile(member)
                        assert f is not None
                        data = f.read()
                    yield member, data
        except tarfile.TarError as e:
            raise ValueError(f"file {path}: not a valid tarball: {e}") from None


def _check_regular_file(path: str) -> None:
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"file {path}: not a regular file")


class TarWriter:
    """Collects entries and writes them, sorted, when closed."""

    def __init__(self, output: str | os.PathLike | BinaryIO,
                 compression: Compression = "none") -> None:
        if compression not in _compression.KINDS:
            raise ValueError(f"unknown compression {compression!r}")
        self._entries: dict[str, _Entry] = {}
        self._output = output
        self._compression = compression
        self._closed = False
        self._hashing: ThreadPoolExecutor | None = None

    def __enter__(self) -> TarWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True

    def add_file(self, name: str, data: Source, mode: int = 0o644,
                 uid: int = 0, gid: int = 0,
                 sha256: str | None = None) -> None:
        """Adds a regular file from bytes or from a path on disk.

        With sha256 ("sha256:<hex>"), the content is hashed as it is
        copied and close() fails if it hashes to anything else.
        """
        if isinstance(data, (bytes, bytearray, memoryview)):
            entry = _Entry("file", mode & 0o7777, data=bytes(data))
        else:
            src = os.fspath(data)
            _check_regular_file(src)
            entry = _Entry("file", mode & 0o7777, src=src)
        entry.uid, entry.gid = _owner(name, uid, gid)
        entry.sha256 = sha256
        self._add(clean_name(name), entry)

    def add_directory(self, name: str, mode: int = 0o755, uid: int = 0,
                      gid: int = 0) -> None:
        uid, gid = _owner(name, uid, gid)
        self._add(clean_name(name), _Entry("dir", mode & 0o7777, uid=uid,
                                           gid=gid))

    def add_symlink(self, name: str, target: str, uid: int = 0,
                    gid: int = 0) -> None:
        if not target or "\0" in target:
            raise ValueError(f"path {name!r}: invalid symlink target {target!r}")
        uid, gid = _owner(name, uid, gid)
        self._add(clean_name(name), _Entry("symlink", 0o777, target=target,
                                           uid=uid, gid=gid))

    def add_hardlink(self, name: str, target: str, uid: int = 0,
                     gid: int = 0) -> None:
        """Adds a hard link to target, an entry of this archive."""
        target = clean_name(target)
        uid, gid = _owner(name, uid, gid)
        self._add(clean_name(name), _Entry("hardlink", 0o644, target=target,
                                           uid=uid, gid=gid))

    def add_tar(self, src: str | os.PathLike) -> None:
        """Adds every member of the tarball src (gzip or zstd too).

        Files, directories, symlinks and hard links keep their names, modes
        and numeric owners; times and owner names are dropped.
        """
        path = os.fspath(src)
        for member, data in iter_tar(path):
            where = f"file {path}: member {member.name!r}"
            try:
                if member.isdir():
                    self.add_directory(member.name, member.mode, member.uid,
                                       member.gid)
                elif member.issym():
                    self.add_symlink(member.name, member.linkname, member.uid,
                                     member.gid)
                elif member.islnk():
                    self.add_hardlink(member.name, member.linkname,
                                      member.uid, member.gid)
                elif member.isfile():
                    assert data is not None
                    self.add_file(member.name, data, member.mode, member.uid,
                                  member.gid)
                else:
                    raise ValueError("unsupported member type")
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None

    def add_tree(self, name: str, src_dir: str | os.PathLike) -> None:
        """Adds the directory src_dir and everything below it under name.

        Regular files get mode 0755 if any executable bit is set, else 0644;
        directories get 0755. A symlink whose relative target stays inside
        the tree is kept as a symlink; any other symlink (absolute, or
        leaving the tree) is replaced by what it points to.
        """
        root = os.path.realpath(src_dir)
        if not os.path.isdir(root):
            raise ValueError(f"file {os.fspath(src_dir)}: not a directory")
        self._add_tree(clean_name(name), os.fspath(src_dir), "", root, (root,))

    def _add_tree(self, name: str, path: str, rel: str, root: str,
                  seen: tuple[str, ...]) -> None:
        self.add_directory(name)
        with os.scandir(path) as it:
            children = sorted(it, key=lambda e: e.name)
        for child in children:
            child_name = f"{name}/{child.name}"
            child_rel = posixpath.join(rel, child.name)
            if child.is_symlink():
                if not os.path.exists(child.path):
                    raise ValueError(f"file {child.path}: dangling symlink")
                target = os.readlink(child.path)
                if _stays_inside(child_rel, target, child.path, root):
                    self.add_symlink(child_name, target)
                    continue
            if child.is_dir():
                real = os.path.realpath(child.path)
                if real in seen:
                    raise ValueError(f"file {child.path}: symlink cycle")
                self._add_tree(child_name, child.path, child_rel, root,
                               seen + (real,))
            elif child.is_file():
                executable = os.stat(child.path).st_mode & 0o111
                self.add_file(child_name, child.path,
                              0o755 if executable else 0o644)
            else:
                raise ValueError(f"file {child.path}: unsupported file type")

    def _add(self, name: str, entry: _Entry) -> None:
        if self._closed:
            raise ValueError("TarWriter is closed")
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            existing = self._entries.get(parent)
            if existing is None:
                self._entries[parent] = _Entry("dir", 0o755, implicit=True)
            elif existing.kind != "dir":
                raise ValueError(
                    f"path {name!r}: parent {parent!r} is a {existing.kind}")
        existing = self._entries.get(name)
        if existing is None:
            self._entries[name] = entry
        elif not self._merge(existing, entry):
            raise ValueError(
                f"path {name!r}: added twice with different content")

    def _merge(self, old: _Entry, new: _Entry) -> bool:
        if old.kind != new.kind:
            return False
        if old.kind == "dir":
            if old.implicit:
                old.mode, old.implicit = new.mode, False
                old.uid, old.gid = new.uid, new.gid
            return (old.mode, old.uid, old.gid) == (new.mode, new.uid, new.gid)
        if (old.uid, old.gid) != (new.uid, new.gid):
            return False
        if old.kind in ("symlink", "hardlink"):
            return old.target == new.target
        if old.mode != new.mode or not _same_content(old, new):
            return False
        old.sha256 = old.sha256 or new.sha256
        return True

    def close(self) -> None:
        """Writes all entries and the end-of-archive marker."""
        if self._closed:
            return
        self._closed = True
        try:
            self._close()
        finally:
            if self._hashing is not None:
                self._hashing.shutdown()

    def _close(self) -> None:
        if isinstance(self._output, (str, os.PathLike)):
            try:
                with open(self._output, "wb") as raw:
                    self._write_compressed(raw)
            except BaseException:
                try:
                    os.unlink(self._output)
                except OSError:
                    pass
                raise
        else:
            self._write_compressed(self._output)

    def _write_compressed(self, raw: BinaryIO) -> None:
        with _compression.open_writer(raw, self._compression) as out:
            self._write(out)

    def _write(self, out: BinaryIO) -> None:
        for name, entry in self._entries.items():
            if entry.kind == "hardlink":
                target = self._entries.get(entry.target)
                if target is None or target.kind != "file":
                    raise ValueError(f"path {name!r}: hard link target "
                                     f"{entry.target!r} is not a file of "
                                     "the archive")
        offset = 0
        for name in sorted(self._entries):
            offset += self._write_entry(out, name, self._entries[name])
        end = 2 * BLOCK_SIZE
        end += -(offset + end) % RECORD_SIZE
        out.write(b"\0" * end)

    def _write_entry(self, out: BinaryIO, name: str, entry: _Entry) -> int:
        if entry.kind == "hardlink" and entry.target > name:
            # Readers need a link's target first: write a copy instead.
            target = self._entries[entry.target]
            entry = dataclasses.replace(target, uid=entry.uid, gid=entry.gid)
        info = tarfile.TarInfo(name)
        info.mode = entry.mode
        info.mtime = 0
        info.uid, info.gid = entry.uid, entry.gid
        info.uname = info.gname = ""
        if entry.kind == "dir":
            info.type = tarfile.DIRTYPE
        elif entry.kind == "symlink":
            info.type = tarfile.SYMTYPE
            info.linkname = entry.target
        elif entry.kind == "hardlink":
            info.type = tarfile.LNKTYPE
            info.linkname = entry.target
        if entry.kind != "file":
            header = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
            out.write(header)
            return len(header)
        with _open_source(entry) as src:
            if entry.data is not None:
                info.size = len(entry.data)
            else:
                st = os.fstat(src.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise ValueError(f"file {entry.src}: not a regular file")
                info.size = st.st_size
            header = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
            out.write(header)
            sha = hashlib.sha256() if entry.sha256 is not None else None
            # Hashing (which releases the GIL) runs in a second thread while
            # the same chunk is written.
            hashed: Future[None] | None = None
            remaining = info.size
            while remaining:
                chunk = src.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    raise ValueError(
                        f"file {entry.src}: shrank while being archived")
                if sha is not None:
                    if hashed is not None:
                        hashed.result()
                    if self._hashing is None:
                        self._hashing = ThreadPoolExecutor(1)
                    hashed = self._hashing.submit(sha.update, chunk)
                out.write(chunk)
                remaining -= len(chunk)
            if hashed is not None:
                hashed.result()
            if sha is not None and "sha256:" + sha.hexdigest() != entry.sha256:
                raise ValueError(
                    f"file {entry.src or name}: content has digest "
                    f"sha256:{sha.hexdigest()}, expected {entry.sha256}")
        padding = -info.size % BLOCK_SIZE
        out.write(b"\0" * padding)
        return len(header) + info.size + padding
