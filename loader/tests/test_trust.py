"""Trust: ownership and modes, symlinks out of the preseed folder, the node image's manifest."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from loader.main import main
from testutil.containerd import Containerd
from testutil.oci_archive import ImageSpec, build_archive

NS = "k8s.io"
FLAG = "--allow-insecure-permissions"


def _bundle(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.tar"
    build_archive(path, [ImageSpec(f"docker.io/library/{name}:1", [{f"{name}.txt": b"x\n"}])])
    return path


@pytest.fixture
def preseed(tmp_path: Path) -> Path:
    root = tmp_path / "preseed"
    _bundle(root / NS, "a")
    _bundle(root / NS, "b")
    return root


def _run(capsys: pytest.CaptureFixture[str], preseed: Path, *extra: str) -> tuple[int, list[Any]]:
    rc = main(["--preseed-dir", str(preseed), "--dry-run", "--log-format=json", *extra])
    return rc, [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def _results(records: list[Any]) -> dict[str, str]:
    return {Path(r["file"]).name: r["result"] for r in records if r["msg"] == "bundle"}


def _refused(records: list[Any]) -> dict[str, str]:
    return {r["file"]: r["reason"] for r in records if r["msg"] == "refused"}


def test_secure_tree_loads(preseed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, records = _run(capsys, preseed)
    assert rc == 0, records
    assert _results(records) == {"a.tar": "verified", "b.tar": "verified"}


def test_group_writable_bundle_is_refused_others_go_on(
    preseed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (preseed / NS / "a.tar").chmod(0o664)
    rc, records = _run(capsys, preseed)
    assert rc == 1
    assert _results(records) == {"b.tar": "verified"}
    reason = _refused(records)[str(preseed / NS / "a.tar")]
    assert "the bundle is writable by group or others (mode 0664)" in reason
    assert FLAG in reason and [r["level"] for r in records if r["msg"] == "refused"] == ["error"]


def test_bundle_not_owned_by_root_is_refused(
    preseed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chown(preseed / NS / "b.tar", 1000, 1000)
    rc, records = _run(capsys, preseed)
    assert rc == 1
    assert _results(records) == {"a.tar": "verified"}
    assert "owned by uid 1000, not root" in _refused(records)[str(preseed / NS / "b.tar")]


def test_writable_namespace_folder_refuses_its_bundles(
    preseed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (preseed / NS).chmod(0o777)
    _bundle(preseed / "other", "c")
    rc, records = _run(capsys, preseed)
    assert rc == 1
    assert _results(records) == {"c.tar": "verified"}
    refused = _refused(records)
    assert set(refused) == {str(preseed / NS / "a.tar"), str(preseed / NS / "b.tar")}
    assert "writable by group or others (mode 0777)" in refused[str(preseed / NS / "a.tar")]


@pytest.mark.parametrize("where", ["preseed", "parent"])
def test_insecure_preseed_folder_or_parent_refuses_all(
    preseed: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    folder = preseed if where == "preseed" else preseed.parent
    folder.chmod(0o775)
    rc, records = _run(capsys, preseed)
    assert rc == 1 and _results(records) == {}
    (reason,) = _refused(records).values()
    assert "writable by group or others (mode 0775)" in reason


def test_sticky_parent_is_fine(preseed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preseed.parent.chmod(0o1777)  # like /tmp
    rc, records = _run(capsys, preseed)
    assert rc == 0, records


def test_flag_allows_insecure_permissions_with_a_warning(
    preseed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (preseed / NS).chmod(0o777)
    os.chown(preseed / NS / "a.tar", 1000, 1000)
    rc, records = _run(capsys, preseed, FLAG)
    assert rc == 0, records
    assert _results(records) == {"a.tar": "verified", "b.tar": "verified"}
    warnings = [r["warning"] for r in records if r["msg"] == "insecure"]
    assert any(f"allowed by {FLAG}" in w and "uid 1000" in w for w in warnings), warnings


@pytest.mark.parametrize("allow", [False, True])
def test_symlinks_out_of_the_preseed_folder_are_refused(
    tmp_path: Path, preseed: Path, capsys: pytest.CaptureFixture[str], allow: bool
) -> None:
    outside = tmp_path / "outside"
    target = _bundle(outside / "ns", "evil")
    (preseed / NS / "evil.tar").symlink_to(target)
    (preseed / "linked").symlink_to(outside / "ns")
    # A link that stays inside is fine.
    (preseed / NS / "a-again.tar").symlink_to(preseed / NS / "a.tar")
    rc, records = _run(capsys, preseed, *([FLAG] if allow else []))
    assert rc == 1
    verified = {"a.tar": "verified", "a-again.tar": "verified", "b.tar": "verified"}
    assert _results(records) == verified
    refused = _refused(records)
    assert "the bundle is a symbolic link to" in refused[str(preseed / NS / "evil.tar")]
    assert "outside the preseed folder" in refused[str(preseed / NS / "evil.tar")]
    linked = refused[str(preseed / "linked" / "evil.tar")]
    assert "namespace folder linked is a symbolic link to" in linked
    assert str(outside / "ns") in linked


def _manifest(preseed: Path, path: Path, names: dict[str, list[str]]) -> Path:
    bundles = []
    for rel, image_names in sorted(names.items()):
        data = (preseed / rel).read_bytes()
        bundles.append(
            {
                "namespace": rel.split("/")[0],
                "path": rel,
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "names": image_names,
            }
        )
    body = {"version": 1, "preseed_dir": "/containerd/preseed", "bundles": bundles}
    path.write_text(json.dumps(body, sort_keys=True, separators=(",", ":")))
    return path


def test_manifest_tampering_is_reported_and_the_rest_loads(
    containerd: Containerd, tmp_path: Path, preseed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _bundle(preseed / NS, "c")
    _bundle(preseed / NS, "d")
    manifest = _manifest(
        preseed,
        tmp_path / "manifest.json",
        {f"{NS}/{n}.tar": [f"docker.io/library/{n}:1"] for n in ("a", "b", "c", "d")},
    )
    # b: same size, other bytes; c: longer; d: gone; e: not in the manifest.
    data = bytearray((preseed / NS / "b.tar").read_bytes())
    data[600] ^= 1
    (preseed / NS / "b.tar").write_bytes(bytes(data))
    with open(preseed / NS / "c.tar", "ab") as f:
        f.write(b"\0" * 512)
    (preseed / NS / "d.tar").unlink()
    _bundle(preseed / NS, "e")
    argv = ["--address", containerd.address, "--preseed-dir", str(preseed), "--timeout", "10"]
    rc = main([*argv, "--log-format=json", "--manifest", str(manifest)])
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert rc == 1
    assert _results(records) == {"a.tar": "loaded"}
    refused = _refused(records)
    assert set(refused) == {str(preseed / NS / f"{n}.tar") for n in "bcde"}
    assert refused[str(preseed / NS / "b.tar")].startswith("tampering: sha256 ")
    assert "the manifest says" in refused[str(preseed / NS / "b.tar")]
    assert refused[str(preseed / NS / "c.tar")].startswith("tampering: ")
    assert "bytes, the manifest says" in refused[str(preseed / NS / "c.tar")]
    assert "lists this bundle but it is missing" in refused[str(preseed / NS / "d.tar")]
    assert "not in the manifest" in refused[str(preseed / NS / "e.tar")]
    images = containerd.state_reader().images(NS)
    assert "docker.io/library/a:1" in images
    assert not {f"docker.io/library/{n}:1" for n in "bcde"} & set(images)


def test_manifest_that_matches_loads_all(
    tmp_path: Path, preseed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _manifest(preseed, tmp_path / "m.json", {f"{NS}/a.tar": [], f"{NS}/b.tar": []})
    rc, records = _run(capsys, preseed, "--manifest", str(manifest))
    assert rc == 0, records
    assert _results(records) == {"a.tar": "verified", "b.tar": "verified"}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"version": 2, "bundles": []}',
        b'{"version": 1}',
        b'{"version": 1, "bundles": [{"namespace": "k8s.io", "path": "x/a.tar"}]}',
    ],
)
def test_unusable_manifest_is_bad_usage(
    tmp_path: Path, preseed: Path, capsys: pytest.CaptureFixture[str], body: bytes
) -> None:
    (tmp_path / "m.json").write_bytes(body)
    rc, records = _run(capsys, preseed, "--manifest", str(tmp_path / "m.json"))
    assert rc == 2
    assert [r["msg"] for r in records if r["level"] == "error"] == ["bad manifest"]


def test_writable_manifest_is_refused_unless_allowed(
    tmp_path: Path, preseed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _manifest(preseed, tmp_path / "m.json", {f"{NS}/a.tar": [], f"{NS}/b.tar": []})
    manifest.chmod(0o666)
    rc, records = _run(capsys, preseed, "--manifest", str(manifest))
    assert rc == 2
    (line,) = [r for r in records if r["msg"] == "bad manifest"]
    assert "writable by group or others" in line["error"] and FLAG in line["error"]
    rc, records = _run(capsys, preseed, "--manifest", str(manifest), FLAG)
    assert rc == 0, records
