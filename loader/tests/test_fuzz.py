"""Property-based fuzzing of the bundle reader: any mutation of a valid bundle is read to the
end or refused with a LoaderError; nothing else is raised, nothing hangs.

Brief by default (CI). For a longer run:
    bazel test //loader:fuzz_test --test_env=PRESEED_FUZZ_EXAMPLES=20000 --test_timeout=3600
which also draws new random examples on every run instead of the fixed CI ones.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import signal
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loader.bundle import open_bundle
from loader.errors import LoaderError
from loader.platforms import host
from testutil import bad_bundles
from testutil.bad_bundles import Entry, Layout, tar_bytes

EXAMPLES = int(os.environ.get("PRESEED_FUZZ_EXAMPLES", "0") or 0)
LONG = EXAMPLES > 0
# One example may take at most this long; more is a hang.
HANG_SECONDS = 20

FUZZ = settings(
    max_examples=EXAMPLES if LONG else 120,
    deadline=None,
    derandomize=not LONG,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _nested_index_layout() -> bytes:
    """index.json -> index (two platforms) -> manifest."""
    layout = Layout("fuzz-nested")
    child = dict(layout.index["manifests"][0])
    child.pop("annotations")
    child["platform"] = {"architecture": "amd64", "os": "linux"}
    other = dict(child, platform={"architecture": "arm64", "os": "linux", "variant": "v8"})
    data = json.dumps({"schemaVersion": 2, "manifests": [child, other]}).encode()
    layout.index["manifests"] = [
        {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": layout.add(data),
            "size": len(data),
            "annotations": {"io.containerd.image.name": "docker.io/library/fuzz:1"},
        }
    ]
    return tar_bytes(layout.entries())


SEEDS: dict[str, bytes] = {
    "oci": tar_bytes(Layout("fuzz-oci").entries()),
    "oci-nested": _nested_index_layout(),
    "docker": bad_bundles.docker_archive("fuzz-docker"),
}


def _members(data: bytes) -> list[Entry]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for info in tar:
            f = tar.extractfile(info) if info.isfile() else None
            out.append(Entry(info, f.read() if f is not None else b""))
    return out


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["mediaType", "digest", "size", "manifests", "layers", "config", "rootfs",
             "diff_ids", "annotations", "platform", "Config", "Layers", "RepoTags", "x"]
        ),
        children,
        max_size=4,
    ),
    max_leaves=12,
)


def _mutate_json(doc: Any, path: list[int], value: Any) -> Any:
    """Replace the node reached by following path (indexes into children) with value."""
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return value
    if isinstance(doc, dict):
        key = sorted(doc)[path[0] % len(doc)]
        return {**doc, key: _mutate_json(doc[key], path[1:], value)}
    i = path[0] % len(doc)
    return doc[:i] + [_mutate_json(doc[i], path[1:], value)] + doc[i + 1 :]


@st.composite
def member_mutation(draw: st.DrawFn, data: bytes) -> bytes:
    """Change one member: its JSON, its bytes, its name or type; or drop or repeat it."""
    entries = _members(data)
    i = draw(st.integers(0, len(entries) - 1))
    entry = entries[i]
    how = draw(st.sampled_from(["json", "bytes", "name", "type", "drop", "repeat"]))
    if how == "json":
        try:
            doc = json.loads(entry.data)
        except ValueError:
            doc = None
        path = draw(st.lists(st.integers(0, 50), max_size=5))
        entry.data = json.dumps(_mutate_json(doc, path, draw(json_values))).encode()
    elif how == "bytes":
        entry.data = draw(st.binary(max_size=600))
    elif how == "name":
        entry.info.name = draw(
            st.sampled_from(
                ["index.json", "manifest.json", "oci-layout", "/index.json", "../x", "./index.json",
                 "blobs/sha256/" + "0" * 64, "blobs/sha256/../../x", "blobs/x/y/z", ""]
            )
        )
    elif how == "type":
        entry.info.type = draw(
            st.sampled_from(
                [
                    tarfile.SYMTYPE,
                    tarfile.LNKTYPE,
                    tarfile.DIRTYPE,
                    tarfile.FIFOTYPE,
                    tarfile.CHRTYPE,
                ]
            )
        )
        entry.info.linkname = draw(st.sampled_from(["index.json", "../index.json", "/etc", "nope"]))
    elif how == "drop":
        del entries[i]
    else:
        entries.append(Entry(copy.copy(entry.info), entry.data))
    return tar_bytes(entries)


@st.composite
def byte_mutation(draw: st.DrawFn, data: bytes) -> bytes:
    """Flip, cut, insert or delete raw bytes of the archive."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(out) - 1)))
        if how == "flip" and out:
            out[pos] ^= draw(st.integers(1, 255))
        elif how == "cut":
            del out[pos:]
        elif how == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        else:
            del out[pos : pos + draw(st.integers(1, 1024))]
    return bytes(out)


@st.composite
def mutated_bundle(draw: st.DrawFn) -> tuple[str, bytes]:
    seed = draw(st.sampled_from(sorted(SEEDS)))
    data = SEEDS[seed]
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            data = draw(member_mutation(data)) if _readable(data) else data
        else:
            data = draw(byte_mutation(data))
    compression = draw(st.sampled_from(["", "", "gzip", "zstd"]))
    if compression == "gzip":
        data = gzip.compress(data, mtime=0)
    elif compression == "zstd":
        data = zstandard.ZstdCompressor().compress(data)
    if compression and draw(st.booleans()):
        data = draw(byte_mutation(data))  # damage the compressed stream itself
    return seed, data


def _readable(data: bytes) -> bool:
    try:
        _members(data)
        return True
    except (tarfile.TarError, EOFError, OSError):
        return False


class Hang(Exception):
    pass


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"no answer in {seconds}s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def read_everything(path: Path) -> None:
    """Open a bundle as the loader does and read every blob it would upload."""
    with open_bundle(path, host()) as bundle:
        _ = (bundle.names, bundle.upload_order(), bundle.warnings)
        for blob in bundle.blobs.values():
            if blob.member is not None and not blob.verified:
                bundle.archive.hash(blob.member)


def test_seeds_are_valid(tmp_path: Path) -> None:
    for name, data in SEEDS.items():
        path = tmp_path / f"{name}.tar"
        path.write_bytes(data)
        read_everything(path)


@FUZZ
@given(bundle=mutated_bundle())
def test_mutated_bundles_raise_only_loader_errors(
    tmp_path_factory: pytest.TempPathFactory, bundle: tuple[str, bytes]
) -> None:
    seed, data = bundle
    path = tmp_path_factory.mktemp("fuzz") / f"{seed}.tar"
    path.write_bytes(data)
    try:
        with _time_limit(HANG_SECONDS):
            read_everything(path)
    except LoaderError as e:
        assert str(e) and "\n" not in str(e)
    finally:
        path.unlink()
