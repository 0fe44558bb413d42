"""The loader against a real containerd (needs root)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loader.main import main
from testutil.containerd import Containerd, StateReader, mounts_under
from testutil.oci_archive import (
    BuiltArchive,
    ImageSpec,
    build_archive,
    corrupt_blob,
    sha256,
    write_layout,
)

REPO = Path(__file__).resolve().parents[2]
NS = "k8s.io"
HELLO = "docker.io/library/hello:latest"


def _bundle(preseed: Path, namespace: str, name: str, *specs: ImageSpec) -> BuiltArchive:
    (preseed / namespace).mkdir(parents=True, exist_ok=True)
    specs = specs or (ImageSpec(HELLO, [{"hello.txt": b"hello\n"}, {"etc/motd": b"preseeded\n"}]),)
    return build_archive(preseed / namespace / name, list(specs))


def _load(
    ctrd: Containerd, preseed: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str]]:
    rc = main(["--address", ctrd.address, "--preseed-dir", str(preseed), "--timeout", "10"])
    return rc, capsys.readouterr().err.splitlines()


def _bundle_line(lines: list[str], path: Path) -> str:
    found = [line for line in lines if "msg=bundle " in line and f"file={path} " in line]
    assert len(found) == 1, lines
    return found[0]


def _field(line: str, key: str) -> str:
    match = re.search(rf"(?:^| ){key}=(\"(?:[^\"\\]|\\.)*\"|\S*)", line)
    assert match, (key, line)
    value = match.group(1)
    return json.loads(value) if value.startswith('"') else value


def _assert_loaded(
    state: StateReader, namespace: str, built: BuiltArchive, snapshotter: str = "overlayfs"
) -> None:
    images = state.images(namespace)
    for image in built.images:
        record = images[image.name]
        assert record.target.digest == image.manifest_digest
        assert record.target.media_type == "application/vnd.oci.image.manifest.v1+json"
        assert record.target.size == image.manifest_size
        manifest = state.content(namespace, image.manifest_digest)
        assert manifest is not None
        labels = dict(manifest.labels)
        assert labels["containerd.io/gc.ref.content.config"] == image.config_digest
        for i, layer in enumerate(image.layer_digests):
            assert labels[f"containerd.io/gc.ref.content.l.{i}"] == layer
            info = state.content(namespace, layer)
            assert info is not None and info.size == len(built.blobs[layer])
            assert info.labels["containerd.io/uncompressed"] == image.diff_ids[i]
        config = state.content(namespace, image.config_digest)
        assert config is not None
        chain = image.chain_ids
        assert config.labels[f"containerd.io/gc.ref.snapshot.{snapshotter}"] == chain[-1]
        for i, chain_id in enumerate(chain):
            snap = state.snapshot(namespace, chain_id, snapshotter)
            assert snap is not None and snap.kind == 3  # COMMITTED
            assert snap.parent == (chain[i - 1] if i else "")
    assert state.leases(namespace) == []
    assert [s.name for s in state.snapshots(namespace, snapshotter) if s.kind != 3] == []


def test_import_then_run_again(
    containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preseed = tmp_path / "preseed"
    built = _bundle(preseed, NS, "hello.tar")
    rc, lines = _load(containerd, preseed, capsys)
    assert rc == 0, lines
    line = _bundle_line(lines, built.path)
    assert "level=info" in line and _field(line, "result") == "loaded"
    assert _field(line, "namespace") == NS and _field(line, "names") == HELLO
    assert int(_field(line, "bytes")) == sum(len(b) for b in built.blobs.values())
    assert float(_field(line, "seconds")) >= 0
    state = containerd.state_reader()
    _assert_loaded(state, NS, built)

    # A garbage collection after the lease is gone keeps everything the image needs.
    state.collect_garbage(NS)
    _assert_loaded(state, NS, built)

    rc, lines = _load(containerd, preseed, capsys)
    assert rc == 0, lines
    line = _bundle_line(lines, built.path)
    assert _field(line, "result") == "unchanged"
    assert _field(line, "bytes") == "0" and _field(line, "blobs_written") == "0"
    assert _field(line, "layers_unpacked") == "0" and _field(line, "images_changed") == "0"
    _assert_loaded(state, NS, built)


def test_bad_bundle_fails_alone(
    containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preseed = tmp_path / "preseed"
    bad = _bundle(preseed, NS, "a-bad.tar", ImageSpec("docker.io/library/bad:1", [{"x": b"bad"}]))
    corrupt_blob(bad.path, bad.images[0].layer_digests[0])
    good = _bundle(preseed, NS, "b-good.tar")
    rc, lines = _load(containerd, preseed, capsys)
    assert rc == 1
    line = _bundle_line(lines, bad.path)
    assert "level=error" in line and _field(line, "result") == "failed"
    assert "is corrupted" in _field(line, "error")
    assert not any(line.startswith("Traceback") for line in lines)
    state = containerd.state_reader()
    assert "docker.io/library/bad:1" not in state.images(NS)
    _assert_loaded(state, NS, good)
    assert "level=info" in lines[-1] and "failed=1" in lines[-1] and "loaded=1" in lines[-1]


def test_unpack_failure_leaves_nothing(
    containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preseed = tmp_path / "preseed"
    wrong = "sha256:" + "0" * 64
    spec = ImageSpec(
        "docker.io/library/liar:1",
        [{"x": b"x"}],
        config_extra={"rootfs": {"type": "layers", "diff_ids": [wrong]}},
    )
    built = _bundle(preseed, NS, "liar.tar", spec)
    rc, lines = _load(containerd, preseed, capsys)
    assert rc == 1
    error = _field(_bundle_line(lines, built.path), "error")
    assert "unpacks to sha256:" in error and wrong in error
    state = containerd.state_reader()
    assert state.images(NS) == {}
    assert state.leases(NS) == []
    assert state.snapshots(NS) == []
    # Its content was held by the lease only, so a collection removes it.
    state.collect_garbage(NS)
    assert all(state.content(NS, digest) is None for digest in built.blobs)


def test_same_bundle_in_two_namespaces(
    containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preseed = tmp_path / "preseed"
    first = _bundle(preseed, "default", "hello.tar")
    second = _bundle(preseed, NS, "hello.tar")
    rc, lines = _load(containerd, preseed, capsys)
    assert rc == 0, lines
    state = containerd.state_reader()
    _assert_loaded(state, "default", first)
    _assert_loaded(state, NS, second)


def test_multi_image_bundle_and_shared_layers(
    containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preseed = tmp_path / "preseed"
    base = {"etc/base": b"base"}
    built = _bundle(
        preseed,
        NS,
        "two.tar",
        ImageSpec("example.com/one:1", [base, {"one": b"1"}]),
        ImageSpec("example.com/two:1", [base, {"two": b"2"}]),
    )
    rc, lines = _load(containerd, preseed, capsys)
    assert rc == 0, lines
    line = _bundle_line(lines, built.path)
    assert _field(line, "names") == "example.com/one:1,example.com/two:1"
    assert _field(line, "layers_unpacked") == "3" and _field(line, "layers_present") == "1"
    _assert_loaded(containerd.state_reader(), NS, built)


def test_skips_are_warned(
    containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preseed = tmp_path / "preseed"
    built = _bundle(preseed, NS, "hello.tar")
    (preseed / "stray.tar").write_bytes(b"")
    (preseed / NS / "subdir").mkdir()
    (preseed / NS / "notes.txt").write_text("x")
    rc, lines = _load(containerd, preseed, capsys)
    assert rc == 0, lines
    warnings = [line for line in lines if "level=warning" in line]
    assert len(warnings) == 3
    assert any(f"path={preseed / 'stray.tar'} " in w for w in warnings)
    assert any(f"path={preseed / NS / 'subdir'} " in w for w in warnings)
    assert any(f"path={preseed / NS / 'notes.txt'} " in w for w in warnings)
    _assert_loaded(containerd.state_reader(), NS, built)


def test_docker_style_index_with_nested_index(
    containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preseed = tmp_path / "preseed"
    built = _bundle(preseed, NS, "multi.tar")
    child = {k: v for k, v in built.images[0].manifest.items() if k != "annotations"}
    nested = json.dumps({"schemaVersion": 2, "manifests": [child]}).encode()
    digest = sha256(nested)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": digest,
                "size": len(nested),
                "annotations": {"io.containerd.image.name": HELLO},
            }
        ],
    }
    write_layout(built.path, index, {**built.blobs, digest: nested})
    rc, lines = _load(containerd, preseed, capsys)
    assert rc == 0, lines
    state = containerd.state_reader()
    assert state.images(NS)[HELLO].target.digest == digest
    index_info = state.content(NS, digest)
    assert index_info is not None
    assert index_info.labels["containerd.io/gc.ref.content.m.0"] == built.images[0].manifest_digest
    state.collect_garbage(NS)
    config = state.content(NS, built.images[0].config_digest)
    assert config is not None and "containerd.io/gc.ref.snapshot.overlayfs" in config.labels


def test_cli_subprocess_and_stop_leaves_no_mounts(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    preseed = tmp_path / "preseed"
    built = _bundle(preseed, NS, "hello.tar")
    with Containerd() as ctrd:
        workdir = ctrd.workdir
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p
            ),
        }
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "loader.main",
                "--address",
                ctrd.address,
                "--preseed-dir",
                str(preseed),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == ""
        _assert_loaded(ctrd.state_reader(), NS, built)
        pid = ctrd.pid
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert mounts_under(workdir) == [] and not workdir.exists()


def test_ctr_runs_the_loaded_image(
    containerd: Containerd, hello_binary: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("ctr") is None or shutil.which("runc") is None:
        pytest.skip("needs ctr and runc")
    preseed = tmp_path / "preseed"
    spec = ImageSpec(HELLO, [{"hello": (hello_binary.read_bytes(), 0o755)}], entrypoint=["/hello"])
    _bundle(preseed, NS, "hello.tar", spec)
    rc, lines = _load(containerd, preseed, capsys)
    assert rc == 0, lines
    state = containerd.state_reader()
    snapshots_before = sorted(s.name for s in state.snapshots(NS))
    ctr = ["ctr", "-a", containerd.address, "-n", NS]
    listed = subprocess.run(
        [*ctr, "images", "ls", "-q"], capture_output=True, text=True, check=True
    )
    assert HELLO in listed.stdout.split()
    check = subprocess.run(
        [*ctr, "images", "check", f"name=={HELLO}"], capture_output=True, text=True, check=True
    )
    assert "complete" in check.stdout and check.stdout.split()[-1] == "true"
    run = subprocess.run(
        [*ctr, "run", "--rm", HELLO, "preseed-hello"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "hello from a preseeded image"
    # ctr found the image unpacked: no new committed snapshot was made.
    assert sorted(s.name for s in state.snapshots(NS)) == snapshots_before


def _partial_ingest(
    address: str, namespace: str, ref: str, total: int, expected: str, data: bytes
) -> None:
    """Leave an uncommitted ingest behind, as a crashed writer would."""
    import grpc

    from loader.api import content_pb2, content_pb2_grpc

    requests = [
        content_pb2.WriteContentRequest(
            action=content_pb2.STAT, ref=ref, total=total, expected=expected
        ),
        content_pb2.WriteContentRequest(action=content_pb2.WRITE, ref=ref, offset=0, data=data),
    ]
    with grpc.insecure_channel(f"unix://{address}") as channel:
        stub = content_pb2_grpc.ContentStub(channel)
        responses = list(
            stub.Write(iter(requests), metadata=(("containerd-namespace", namespace),))
        )
    assert responses[-1].offset == len(data)


@pytest.mark.parametrize("stale", [False, True], ids=["resumes", "replaces-stale"])
def test_interrupted_ingest(
    containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str], stale: bool
) -> None:
    preseed = tmp_path / "preseed"
    big = os.urandom(3 << 20)
    built = _bundle(preseed, NS, "big.tar", ImageSpec(HELLO, [{"big.bin": big}], gzip=False))
    layer = built.images[0].layer_digests[0]
    blob = built.blobs[layer]
    half = len(blob) // 2
    prefix = bytes(half) if stale else blob[:half]
    _partial_ingest(containerd.address, NS, f"preseed-{layer}", len(blob), layer, prefix)
    rc, lines = _load(containerd, preseed, capsys)
    assert rc == 0, lines
    written = int(_field(_bundle_line(lines, built.path), "bytes"))
    others = sum(len(b) for d, b in built.blobs.items() if d != layer)
    # A good prefix is kept; a stale one fails the digest check and the blob is sent again whole.
    assert written == others + (len(blob) if stale else len(blob) - half)
    _assert_loaded(containerd.state_reader(), NS, built)
