"""--manifest at a second boot: a bundle verified before is not hashed again (real containerd)."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path
from typing import Any, Callable

import pytest

from loader import state
from loader.client import Client
from loader.main import main
from loader.tests.helpers import bundle_records, load
from loader.verified import LABEL_VERIFIED
from testutil.containerd import Containerd
from testutil.oci_archive import ImageSpec, build_archive

NS = "k8s.io"
A = "docker.io/library/a:1"
B = ("docker.io/library/b:1", "docker.io/library/b:2")


@pytest.fixture
def preseed(tmp_path: Path) -> Path:
    root = tmp_path / "preseed"
    (root / NS).mkdir(parents=True)
    build_archive(root / NS / "a.tar", [ImageSpec(A, [{"a.bin": os.urandom(200 << 10)}])])
    specs = [ImageSpec(n, [{"b.bin": os.urandom(100 << 10)}, {n[-1]: n.encode()}]) for n in B]
    build_archive(root / NS / "b.tar", specs)
    return root


def _manifest(preseed: Path, path: Path, sha256: dict[str, str] | None = None) -> Path:
    bundles = []
    for file in ("a.tar", "b.tar"):
        data = (preseed / NS / file).read_bytes()
        digest = (sha256 or {}).get(file, hashlib.sha256(data).hexdigest())
        bundles.append(
            {"namespace": NS, "path": f"{NS}/{file}", "sha256": digest, "size": len(data), "names": []}
        )
    body = {"version": 1, "preseed_dir": "/containerd/preseed", "bundles": bundles}
    path.write_text(json.dumps(body, sort_keys=True, separators=(",", ":")))
    return path


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files hashed whole (hashlib.file_digest) in this process, by name."""
    calls: list[str] = []
    real: Callable[..., Any] = hashlib.file_digest

    def counting(f: Any, digest: Any) -> Any:
        calls.append(Path(f.name).name)
        return real(f, digest)

    monkeypatch.setattr(hashlib, "file_digest", counting)
    return calls


def _labels(containerd: Containerd) -> dict[str, str | None]:
    images = containerd.state_reader().images(NS)
    return {n: images[n].labels.get(LABEL_VERIFIED) for n in (A, *B)}


def _refused(records: list[dict[str, Any]]) -> dict[str, str]:
    return {Path(r["file"]).name: r["reason"] for r in records if r["msg"] == "refused"}


def test_second_run_accepts_the_recorded_verification(
    containerd: Containerd,
    tmp_path: Path,
    preseed: Path,
    capsys: pytest.CaptureFixture[str],
    hashed: list[str],
) -> None:
    manifest = str(_manifest(preseed, tmp_path / "manifest.json"))
    # Loaded without --manifest first: no verification is recorded.
    rc, records = load(containerd, preseed, capsys)
    assert rc == 0, records
    assert set(_labels(containerd).values()) == {None}
    assert "manifest" not in bundle_records(records)["a.tar"]
    # Unchanged in containerd, but never checked against the manifest: hashed, then recorded.
    rc, records = load(containerd, preseed, capsys, "--manifest", manifest)
    assert rc == 0, records
    got = bundle_records(records)
    assert {f: (r["result"], r["manifest"]) for f, r in got.items()} == {
        "a.tar": ("unchanged", "hashed"),
        "b.tar": ("unchanged", "hashed"),
    }
    assert sorted(hashed) == ["a.tar", "b.tar"]
    labels = _labels(containerd)
    st = os.stat(preseed / NS / "b.tar")
    sha = hashlib.sha256((preseed / NS / "b.tar").read_bytes()).hexdigest()
    stat_part = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
    assert labels[B[0]] == labels[B[1]] == f"{sha}:{stat_part}"
    assert labels[A] is not None and labels[A] != labels[B[0]]
    # The next run hashes nothing and opens no bundle.
    hashed.clear()
    report = tmp_path / "report.json"
    rc, records = load(containerd, preseed, capsys, "--manifest", manifest, "--report", str(report))
    assert rc == 0, records
    assert hashed == []
    got = bundle_records(records)
    assert {f: (r["result"], r["manifest"], r["bytes"]) for f, r in got.items()} == {
        "a.tar": ("unchanged", "recorded", 0),
        "b.tar": ("unchanged", "recorded", 0),
    }
    body = json.loads(report.read_text())
    assert [(b["result"], b["manifest"]) for b in body["bundles"]] == [("unchanged", "recorded")] * 2
    assert _labels(containerd) == labels


def test_rewritten_bundle_with_size_and_mtime_restored_is_hashed_and_refused(
    containerd: Containerd,
    tmp_path: Path,
    preseed: Path,
    capsys: pytest.CaptureFixture[str],
    hashed: list[str],
) -> None:
    manifest = str(_manifest(preseed, tmp_path / "manifest.json"))
    rc, records = load(containerd, preseed, capsys, "--manifest", manifest)
    assert rc == 0, records
    assert {r["manifest"] for r in bundle_records(records).values()} == {"hashed"}
    before = _labels(containerd)
    path = preseed / NS / "b.tar"
    st = os.stat(path)
    fingerprint = state.fingerprint(path, "v")
    # Flip one byte inside the largest blob: index.json, size and (restored) mtime stay.
    with tarfile.open(path) as tar:
        member = max(tar.getmembers(), key=lambda m: m.size)
    data = bytearray(path.read_bytes())
    data[member.offset_data + 100] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert state.fingerprint(path, "v") == fingerprint
    assert os.stat(path).st_ctime_ns != st.st_ctime_ns
    hashed.clear()
    rc, records = load(containerd, preseed, capsys, "--manifest", manifest)
    assert rc == 1
    assert hashed == ["b.tar"]
    assert bundle_records(records)["a.tar"]["manifest"] == "recorded"
    assert "b.tar" not in bundle_records(records)
    (reason,) = _refused(records).values()
    assert reason.startswith("tampering: sha256 ") and "the manifest says" in reason
    assert [r["level"] for r in records if r["msg"] == "refused"] == ["error"]
    # Nothing was written: the records are those of the first run.
    assert _labels(containerd) == before


def test_changed_manifest_sha256_forces_a_rehash(
    containerd: Containerd,
    tmp_path: Path,
    preseed: Path,
    capsys: pytest.CaptureFixture[str],
    hashed: list[str],
) -> None:
    rc, records = load(
        containerd, preseed, capsys, "--manifest", str(_manifest(preseed, tmp_path / "m1.json"))
    )
    assert rc == 0, records
    before = _labels(containerd)
    other = _manifest(preseed, tmp_path / "m2.json", {"a.tar": "0" * 64})
    hashed.clear()
    rc, records = load(containerd, preseed, capsys, "--manifest", str(other))
    assert rc == 1
    assert hashed == ["a.tar"]
    assert _refused(records)["a.tar"].endswith(f"the manifest says {'0' * 64}")
    assert bundle_records(records)["b.tar"]["manifest"] == "recorded"
    assert _labels(containerd) == before


def test_removed_image_is_rehashed_and_reloaded(
    containerd: Containerd,
    tmp_path: Path,
    preseed: Path,
    capsys: pytest.CaptureFixture[str],
    hashed: list[str],
) -> None:
    manifest = str(_manifest(preseed, tmp_path / "manifest.json"))
    rc, records = load(containerd, preseed, capsys, "--manifest", manifest)
    assert rc == 0, records
    before = _labels(containerd)
    client = Client(containerd.address)
    try:
        client.with_namespace(NS).image_delete(B[1])
    finally:
        client.close()
    hashed.clear()
    rc, records = load(containerd, preseed, capsys, "--manifest", manifest)
    assert rc == 0, records
    assert hashed == ["b.tar"]
    got = bundle_records(records)
    assert (got["a.tar"]["result"], got["a.tar"]["manifest"]) == ("unchanged", "recorded")
    assert (got["b.tar"]["result"], got["b.tar"]["manifest"]) == ("loaded", "hashed")
    assert _labels(containerd) == before


def test_dry_run_hashes_every_time(
    tmp_path: Path, preseed: Path, capsys: pytest.CaptureFixture[str], hashed: list[str]
) -> None:
    manifest = str(_manifest(preseed, tmp_path / "manifest.json", {"b.tar": "1" * 64}))
    for _ in range(2):
        hashed.clear()
        rc = main(
            ["--preseed-dir", str(preseed), "--dry-run", "--log-format=json", "--manifest", manifest]
        )
        records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert rc == 1
        assert sorted(hashed) == ["a.tar", "b.tar"]
        assert bundle_records(records)["a.tar"]["manifest"] == "hashed"
        assert _refused(records)["b.tar"].startswith("tampering: sha256 ")
