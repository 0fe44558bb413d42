"""Reading a bundle's tar: plain (seekable) or compressed as a whole (one streaming pass)."""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Protocol

import zstandard

from loader import safety
from loader.errors import BundleError
from loader.safety import MAX_JSON_SIZE

CHUNK_SIZE = 1 << 20
# Members at most this big, or JSON documents up to MAX_JSON_SIZE, are read into memory.
SMALL_SIZE = 256 << 10

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def compression_of(head: bytes) -> str:
    """'gzip', 'zstd' or '' (none) from the first bytes of a stream."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return ""


@dataclass
class Member:
    """A regular file of the archive."""

    name: str
    size: int
    head: bytes = b""  # its first bytes (for detecting compressed layers)
    data: bytes | None = None  # whole content, for small members
    offset: int | None = None  # where its data starts, in a seekable archive
    digest: str | None = None  # sha256 of its content, once read


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


# Called for every large member of a compressed bundle, in archive order: it must read the
# member to its end and return its sha256 digest.
Sink = Callable[[Member, Reader], str]


def normalize(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _reason(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def hash_stream(f: Reader, size: int, first: bytes = b"") -> str:
    """sha256 of first + the rest of f; checks that exactly size bytes came."""
    hasher = hashlib.sha256(first)
    got = len(first)
    while True:
        chunk = f.read(CHUNK_SIZE)
        if not chunk:
            break
        hasher.update(chunk)
        got += len(chunk)
    if got != size:
        raise BundleError(f"truncated member ({got} of {size} bytes)")
    return "sha256:" + hasher.hexdigest()


class Archive:
    """The members of one bundle tar, read once; large members stay in the file or went to a sink."""

    def __init__(self, path: Path, compression: str) -> None:
        self.path = path
        self.compression = compression
        self.members: dict[str, Member] = {}
        self.memory = safety.MemoryBudget()
        self._fd: int | None = None

    @property
    def seekable(self) -> bool:
        return self.compression == ""

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def get(self, name: str) -> Member | None:
        return self.members.get(name)

    def read(self, member: Member, limit: int = MAX_JSON_SIZE) -> bytes:
        """The whole content of a member (small, or large in a seekable archive)."""
        if member.data is not None:
            return member.data
        if member.size > limit:
            raise BundleError(f"{member.name} is too large to parse ({member.size} bytes)")
        if member.offset is None:
            raise BundleError(f"{member.name} was streamed and cannot be read again")
        return b"".join(self.chunks(member, 0))

    def chunks(self, member: Member, start: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Bytes of a member from start, read with pread (safe from many threads)."""
        if member.data is not None:
            for pos in range(start, member.size, chunk_size):
                yield member.data[pos : pos + chunk_size]
            return
        if member.offset is None or self._fd is None:
            raise BundleError(f"{member.name} cannot be read again")
        pos = start
        while pos < member.size:
            want = min(chunk_size, member.size - pos)
            chunk = os.pread(self._fd, want, member.offset + pos)
            if not chunk:
                raise BundleError(f"{member.name} is truncated")
            yield chunk
            pos += len(chunk)

    def hash(self, member: Member) -> str:
        """sha256 of a member's content (computed once)."""
        if member.digest is None:
            hasher = hashlib.sha256()
            for chunk in self.chunks(member, 0):
                hasher.update(chunk)
            member.digest = "sha256:" + hasher.hexdigest()
        return member.digest


def _keep_in_memory(name: str, size: int, head: bytes) -> bool:
    if size <= SMALL_SIZE:
        return True
    json_like = name.endswith(".json") or head[:1] in (b"{", b"[")
    return json_like and size <= MAX_JSON_SIZE


def open_archive(path: Path, sink: Sink | None = None) -> Archive:
    """Read a bundle's members; compressed bundles are read in one pass, large members to sink.

    Raises BundleError with a one-line reason.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise BundleError(f"cannot open: {e.strerror or e}") from None
    archive = Archive(path, compression_of(head))
    try:
        if archive.seekable:
            _scan_seekable(archive)
        else:
            _scan_stream(archive, sink)
    except BundleError:
        archive.close()
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, zstandard.ZstdError) as e:
        archive.close()
        raise BundleError(f"not a readable tar archive: {_reason(e)}") from None
    except BaseException:
        archive.close()
        raise
    return archive


def _add(archive: Archive, member: Member) -> None:
    if member.name in archive.members:
        raise BundleError(f"duplicate archive member {member.name}")
    archive.members[member.name] = member


def _scan_seekable(archive: Archive) -> None:
    archive._fd = os.open(archive.path, os.O_RDONLY | os.O_CLOEXEC)
    with tarfile.open(archive.path, mode="r:") as tar:
        links: list[tuple[str, str]] = []
        for count, info in enumerate(tar, 1):
            safety.check_member(info, count)
            name = normalize(info.name)
            if info.islnk():
                links.append((name, normalize(info.linkname)))
                continue
            if not info.isfile():
                continue
            member = Member(name, info.size, offset=info.offset_data)
            member.head = os.pread(archive._fd, min(512, info.size), info.offset_data)
            if _keep_in_memory(name, info.size, member.head):
                archive.memory.take(info.size)
                member.data = b"".join(archive.chunks(member, 0))
                member.offset = None
                member.digest = "sha256:" + hashlib.sha256(member.data).hexdigest()
            _add(archive, member)
        for name, target in links:
            source = archive.members.get(target)
            if source is None:
                raise BundleError(f"{name} links to missing member {target}")
            _add(archive, Member(name, source.size, source.head, source.data, source.offset))
            archive.members[name].digest = source.digest


def _stream(f: IO[bytes], compression: str) -> IO[bytes]:
    if compression == "gzip":
        stream: IO[bytes] = gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[assignment]
    else:
        stream = zstandard.ZstdDecompressor().stream_reader(f, read_size=CHUNK_SIZE)  # type: ignore
    size = os.fstat(f.fileno()).st_size
    return safety.BoundedReader(stream, safety.expansion_limit(size), size)  # type: ignore


def _scan_stream(archive: Archive, sink: Sink | None) -> None:
    with open(archive.path, "rb") as raw, _stream(raw, archive.compression) as stream:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK_SIZE) as tar:
            for count, info in enumerate(tar, 1):
                safety.check_member(info, count)
                name = normalize(info.name)
                if info.islnk():
                    source = archive.members.get(normalize(info.linkname))
                    if source is None:
                        raise BundleError(f"{name} links to missing member {info.linkname}")
                    _add(archive, Member(name, source.size, source.head, source.data))
                    archive.members[name].digest = source.digest
                    continue
                if not info.isfile():
                    continue
                f = tar.extractfile(info)
                assert f is not None
                head = f.read(min(512, info.size))
                member = Member(name, info.size, head)
                if _keep_in_memory(name, info.size, head):
                    archive.memory.take(info.size)
                    member.data = head + f.read()
                    if len(member.data) != info.size:
                        raise BundleError(f"{name} is truncated")
                    member.digest = "sha256:" + hashlib.sha256(member.data).hexdigest()
                else:
                    rest = _Prefixed(head, f)
                    if sink is None:
                        member.digest = hash_stream(rest, info.size)
                    else:
                        member.digest = sink(member, rest)
                _add(archive, member)


class _Prefixed:
    """A reader that yields already-read bytes, then the rest of a file."""

    def __init__(self, first: bytes, rest: IO[bytes]) -> None:
        self._first = first
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if self._first:
            out, self._first = self._first, b""
            return out
        return self._rest.read(n)
