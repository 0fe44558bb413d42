"""Pins, bundle labels, prune, the second-boot check, parallel runs and reports (real containerd)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

import loader.client
import loader.importer
from loader.api import snapshots_pb2, snapshots_pb2_grpc
from loader.tests.helpers import assert_unpacked, bundle_records, load
from testutil.containerd import Containerd
from testutil.oci_archive import BuiltArchive, ImageSpec, build_archive

NS = "k8s.io"
REPO = Path(__file__).resolve().parents[2]


def _bundle(preseed: Path, ns: str, file: str, *names: str, size: int = 300 << 10) -> BuiltArchive:
    (preseed / ns).mkdir(parents=True, exist_ok=True)
    specs = [ImageSpec(n, [{"base": b"base"}, {n.replace(":", "_"): os.urandom(size)}]) for n in names]
    return build_archive(preseed / ns / file, specs)


def _ours(images: dict) -> dict:  # type: ignore[type-arg]
    return {n: i for n, i in images.items() if not n.startswith("sha256:")}


def test_pins_and_bundle_labels(
    containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preseed = tmp_path / "preseed"
    _bundle(preseed, NS, "a.tar", "example.com/a:1")
    _bundle(preseed, "default", "b.tar", "example.com/b:1")
    rc, _ = load(containerd, preseed, capsys)
    assert rc == 0
    state = containerd.state_reader()
    a = state.images(NS)["example.com/a:1"]
    b = state.images("default")["example.com/b:1"]
    assert a.labels["io.cri-containerd.pinned"] == "pinned"
    assert "io.cri-containerd.pinned" not in b.labels
    assert a.labels["preseed.dev/bundle"] == "a.tar" and b.labels["preseed.dev/bundle"] == "b.tar"
    # Someone unpins: the next run (still the fast path) pins again, reading nothing.
    subprocess.run(
        ["ctr", "-a", containerd.address, "-n", NS, "images", "label", "example.com/a:1",
         "io.cri-containerd.pinned="],
        check=True, capture_output=True,
    )
    assert "io.cri-containerd.pinned" not in state.images(NS)["example.com/a:1"].labels
    rc, records = load(containerd, preseed, capsys)
    line = bundle_records(records)["a.tar"]
    assert rc == 0 and line["result"] == "unchanged" and line["images_changed"] == 1
    assert state.images(NS)["example.com/a:1"].labels["io.cri-containerd.pinned"] == "pinned"


def test_no_pin(containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preseed = tmp_path / "preseed"
    _bundle(preseed, NS, "a.tar", "example.com/a:1")
    rc, _ = load(containerd, preseed, capsys, "--no-pin")
    assert rc == 0
    labels = containerd.state_reader().images(NS)["example.com/a:1"].labels
    assert "io.cri-containerd.pinned" not in labels and labels["preseed.dev/bundle"] == "a.tar"


def _remove_snapshot(ctrd: Containerd, ns: str, key: str) -> None:
    with grpc.insecure_channel(f"unix://{ctrd.address}") as channel:
        snapshots_pb2_grpc.SnapshotsStub(channel).Remove(
            snapshots_pb2.RemoveSnapshotRequest(snapshotter="overlayfs", key=key),
            metadata=(("containerd-namespace", ns),),
        )


@pytest.mark.parametrize("change", ["none", "image", "content", "snapshot", "bundle"])
def test_second_boot(
    containerd: Containerd,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    # Not k8s.io: CRI there keeps its own records of every image, which hold the content.
    ns = "default"
    preseed = tmp_path / "preseed"
    built = _bundle(preseed, ns, "a.tar", "example.com/a:1", "example.com/b:1")
    _bundle(preseed, ns, "other.tar", "example.com/o:1")
    rc, records = load(containerd, preseed, capsys)
    assert rc == 0, [r.get("error") for r in records]
    state = containerd.state_reader()
    image = built.image("example.com/b:1")
    if change == "image":
        subprocess.run(["ctr", "-a", containerd.address, "-n", ns, "images", "rm", image.name], check=True)
    elif change == "content":
        subprocess.run(["ctr", "-a", containerd.address, "-n", ns, "images", "rm", image.name], check=True)
        state.collect_garbage(ns)
        assert state.content(ns, image.layer_digests[1]) is None
    elif change == "snapshot":
        _remove_snapshot(containerd, ns, image.chain_ids[-1])
    elif change == "bundle":
        stat = built.path.stat()
        built = _bundle(preseed, ns, "a.tar", "example.com/a:1", "example.com/b:1")
        os.utime(built.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    opened: list[str] = []
    real = loader.importer.open_bundle

    def spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(loader.importer, "open_bundle", spy)
    rc, records = load(containerd, preseed, capsys)
    assert rc == 0, [r.get("error") for r in records]
    lines = bundle_records(records)
    assert lines["other.tar"]["result"] == "unchanged"
    if change == "none":
        assert opened == []  # nothing read, hashed, streamed or unpacked
        assert lines["a.tar"]["result"] == "unchanged" and lines["a.tar"]["bytes"] == 0
    else:
        assert opened == ["a.tar"]
        assert lines["a.tar"]["result"] == "loaded"
    if change == "content":
        assert lines["a.tar"]["bytes"] > 0
    if change == "snapshot":
        assert lines["a.tar"]["layers_unpacked"] == 1
    current = state.images(ns)
    for built_image in built.images:
        assert current[built_image.name].target.digest == built_image.manifest_digest
        assert_unpacked(state, ns, built_image.diff_ids)


def test_prune(containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preseed = tmp_path / "preseed"
    _bundle(preseed, NS, "keep.tar", "example.com/keep:1", "example.com/dropped:1")
    gone = _bundle(preseed, NS, "gone.tar", "example.com/gone:1")
    _bundle(preseed, "default", "d.tar", "example.com/d:1")
    foreign = build_archive(tmp_path / "foreign.tar", [ImageSpec("example.com/foreign:1", [{"f": b"f"}])])
    subprocess.run(
        ["ctr", "-a", containerd.address, "-n", NS, "images", "import", str(foreign.path)],
        check=True, capture_output=True,
    )
    rc, _ = load(containerd, preseed, capsys)
    assert rc == 0
    gone.path.unlink()
    _bundle(preseed, NS, "keep.tar", "example.com/keep:1")  # the new version no longer has one
    rc, records = load(containerd, preseed, capsys)  # without --prune nothing goes
    assert rc == 0 and "example.com/gone:1" in containerd.state_reader().images(NS)
    rc, records = load(containerd, preseed, capsys, "--prune")
    assert rc == 0, records
    pruned = sorted((r["namespace"], r["name"]) for r in records if r["msg"] == "pruned")
    assert pruned == [(NS, "example.com/dropped:1"), (NS, "example.com/gone:1")]
    state = containerd.state_reader()
    assert set(_ours(state.images(NS))) == {"example.com/keep:1", "example.com/foreign:1"}
    assert set(state.images("default")) == {"example.com/d:1"}


def test_parallel_runs_are_deterministic(
    containerd: Containerd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preseed = tmp_path / "preseed"
    files = [f"b{i}.tar" for i in range(6)]
    for i, file in enumerate(files):
        # Every bundle also holds example.com/shared:1; the last in file order must win.
        _bundle(preseed, NS, file, f"example.com/own{i}:1", "example.com/shared:1", size=200 << 10)
    report = tmp_path / "report.json"
    rc, records = load(containerd, preseed, capsys, "--jobs", "4", "--report", str(report))
    assert rc == 0, records
    assert [Path(r["file"]).name for r in records if r["msg"] == "bundle"] == files
    shared = containerd.state_reader().images(NS)["example.com/shared:1"]
    assert shared.labels["preseed.dev/bundle"] == "b5.tar"
    body = json.loads(report.read_text())
    assert body["exit_code"] == 0 and body["summary"]["loaded"] == 6
    assert [Path(b["file"]).name for b in body["bundles"]] == files
    assert all(b["result"] == "loaded" and b["error"] is None for b in body["bundles"])
    assert records[-1]["msg"] == "done" and records[-1]["loaded"] == 6


def test_shared_layers_are_unpacked_once(
    containerd: Containerd,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Bundles prepared at once share a base layer: one unpacks it, the others wait and reuse it.
    preseed = tmp_path / "preseed"
    (preseed / NS).mkdir(parents=True)
    base = {"usr/lib/base.bin": os.urandom(4 << 20)}
    for i in range(4):
        spec = ImageSpec(f"example.com/app{i}:1", [base, {f"app{i}": os.urandom(64 << 10)}])
        build_archive(preseed / NS / f"app{i}.tar", [spec])
    applied: list[str] = []
    real_apply = loader.client.Client.diff_apply

    def counting_apply(self, desc, mounts):  # type: ignore[no-untyped-def]
        applied.append(desc.digest)
        return real_apply(self, desc, mounts)

    monkeypatch.setattr(loader.client.Client, "diff_apply", counting_apply)
    rc, records = load(containerd, preseed, capsys, "--jobs", "4")
    assert rc == 0, records
    assert len(applied) == len(set(applied)) == 5, applied  # the base once, then each app
    lines = bundle_records(records).values()
    assert sum(r["layers_unpacked"] for r in lines) == 5
    assert sum(r["layers_present"] for r in lines) == 3


def test_waits_for_the_socket_then_loads(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    preseed = tmp_path / "preseed"
    _bundle(preseed, NS, "a.tar", "example.com/a:1")
    ctrd = Containerd()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    child = subprocess.Popen(
        [sys.executable, "-m", "loader.main", "--address", ctrd.address, "--preseed-dir",
         str(preseed), "--timeout", "30", "--log-format", "json"],
        stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        time.sleep(1.5)
        assert child.poll() is None  # still waiting
        with ctrd:
            _, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            records = [json.loads(line) for line in err.splitlines()]
            assert bundle_records(records)["a.tar"]["result"] == "loaded"
    finally:
        if child.poll() is None:
            child.kill()
