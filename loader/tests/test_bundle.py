import io
import json
import tarfile
from pathlib import Path

import pytest

from loader import oci
from loader.bundle import open_bundle
from loader.errors import BundleError
from loader.platforms import Platform, host
from testutil.oci_archive import (
    OCI_INDEX,
    ImageSpec,
    build_archive,
    corrupt_blob,
    sha256,
    write_layout,
)

NAME = "docker.io/library/hello:latest"


def _archive(tmp_path: Path, *specs: ImageSpec):
    specs = specs or (ImageSpec(NAME, [{"hello.txt": b"hello\n"}, {"etc/motd": b"hi"}]),)
    return build_archive(tmp_path / "b.tar", list(specs))


def _index_of(built) -> dict:
    return {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [i.manifest for i in built.images],
    }


def test_reads_names_layers_and_diff_ids(tmp_path: Path) -> None:
    built = _archive(tmp_path)
    with open_bundle(built.path) as bundle:
        assert bundle.names == [NAME]
        image = bundle.images[0]
        assert image.target.digest == built.images[0].manifest_digest
        assert image.target.annotations[oci.ANNOTATION_IMAGE_NAME] == NAME
        assert image.manifest == image.target
        assert image.config.digest == built.images[0].config_digest
        assert [layer.digest for layer in image.layers] == built.images[0].layer_digests
        assert list(image.diff_ids) == built.images[0].diff_ids
        order = [d.digest for d in bundle.upload_order()]
        assert order == [*built.images[0].layer_digests, image.config.digest, image.manifest.digest]
        assert [c.digest for c in bundle.children[image.manifest.digest]] == [
            image.config.digest,
            *built.images[0].layer_digests,
        ]
        assert bundle.warnings == []


def test_streams_blobs_in_chunks_from_an_offset(tmp_path: Path) -> None:
    big = bytes(range(256)) * 2048  # 512 KiB, stored uncompressed
    built = _archive(tmp_path, ImageSpec(NAME, [{"big": big}], gzip=False))
    digest = built.images[0].layer_digests[0]
    blob = built.blobs[digest]
    with open_bundle(built.path) as bundle:
        member = bundle.blobs[digest].member
        assert member is not None and member.data is None  # large: left in the file
        chunks = list(bundle.archive.chunks(member, 0, chunk_size=64 * 1024))
        assert max(len(c) for c in chunks) == 64 * 1024
        assert b"".join(chunks) == blob
        assert b"".join(bundle.archive.chunks(member, 1000, chunk_size=4096)) == blob[1000:]
        assert bundle.archive.hash(member) == digest


def test_corrupted_blob_is_rejected(tmp_path: Path) -> None:
    built = _archive(tmp_path)
    layer = built.images[0].layer_digests[0]
    corrupt_blob(built.path, layer)
    with pytest.raises(BundleError, match=f"blob {layer} is corrupted"):
        open_bundle(built.path)


def test_size_mismatch_in_descriptor_is_rejected(tmp_path: Path) -> None:
    built = _archive(tmp_path)
    index = _index_of(built)
    index["manifests"][0]["size"] += 1
    write_layout(built.path, index, built.blobs)
    with pytest.raises(BundleError, match="descriptor says"):
        open_bundle(built.path)


def test_missing_layer_blob_is_rejected(tmp_path: Path) -> None:
    built = _archive(tmp_path)
    layer = built.images[0].layer_digests[1]
    blobs = {d: b for d, b in built.blobs.items() if d != layer}
    write_layout(built.path, _index_of(built), blobs)
    with pytest.raises(BundleError, match=f"blob {layer} is missing"):
        open_bundle(built.path)


def test_missing_index_or_layout_is_rejected(tmp_path: Path) -> None:
    built = _archive(tmp_path)
    write_layout(built.path, None, built.blobs)
    with pytest.raises(BundleError, match="neither index.json"):
        open_bundle(built.path)
    write_layout(built.path, _index_of(built), built.blobs, layout=None)
    with open_bundle(built.path) as bundle:
        assert bundle.warnings == ["no oci-layout file"]


def test_not_a_tar_and_truncated_tar(tmp_path: Path) -> None:
    path = tmp_path / "x.tar"
    path.write_bytes(b"this is not a tar archive" * 100)
    with pytest.raises(BundleError, match="not a readable tar archive"):
        open_bundle(path)
    built = _archive(tmp_path)
    data = built.path.read_bytes()
    built.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError):
        open_bundle(built.path)


def test_invalid_json_index(tmp_path: Path) -> None:
    built = _archive(tmp_path)
    with tarfile.open(built.path, "w") as tar:
        for name, data in (
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", b"{nope"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(BundleError, match="index.json is not valid JSON"):
        open_bundle(built.path)


def test_diff_id_count_must_match_layers(tmp_path: Path) -> None:
    spec = ImageSpec(
        NAME, [{"a": b"a"}], config_extra={"rootfs": {"type": "layers", "diff_ids": []}}
    )
    built = _archive(tmp_path, spec)
    with pytest.raises(BundleError, match="0 diff_ids for 1 layers"):
        open_bundle(built.path)


def test_bare_tag_and_unnamed_manifests(tmp_path: Path) -> None:
    built = _archive(tmp_path, ImageSpec(NAME, [{"a": b"a"}]), ImageSpec("other:1", [{"b": b"b"}]))
    index = _index_of(built)
    index["manifests"][1]["annotations"] = {"org.opencontainers.image.ref.name": "1.0"}
    write_layout(built.path, index, built.blobs)
    with open_bundle(built.path) as bundle:  # the file is b.tar
        assert bundle.names == [NAME, "docker.io/library/b:1.0"]
        assert bundle.warnings == []
    index["manifests"][1]["annotations"] = {}
    write_layout(built.path, index, built.blobs)
    with open_bundle(built.path) as bundle:
        digest = built.images[1].manifest_digest
        assert bundle.names == [NAME, f"docker.io/library/b@{digest}"]
        assert len(bundle.warnings) == 1 and "has no name" in bundle.warnings[0]


def test_full_ref_name_annotation_is_enough(tmp_path: Path) -> None:
    built = _archive(tmp_path)
    index = _index_of(built)
    index["manifests"][0]["annotations"] = {"org.opencontainers.image.ref.name": NAME}
    write_layout(built.path, index, built.blobs)
    with open_bundle(built.path) as bundle:
        assert bundle.names == [NAME]


def test_dot_slash_member_names(tmp_path: Path) -> None:
    built = _archive(tmp_path)
    names = {d: "./blobs/" + d.replace(":", "/") for d in built.blobs}
    write_layout(built.path, _index_of(built), built.blobs, blob_names=names)
    with open_bundle(built.path) as bundle:
        assert bundle.names == [NAME]


def test_picks_the_host_platform_among_manifests_of_one_name(tmp_path: Path) -> None:
    other = "arm64" if host().architecture != "arm64" else "amd64"
    built = _archive(
        tmp_path,
        ImageSpec(NAME, [{"a": b"host"}]),
        ImageSpec(NAME, [{"a": b"other"}], architecture=other),
    )
    with open_bundle(built.path) as bundle:
        assert bundle.names == [NAME]
        assert bundle.images[0].manifest.digest == built.images[0].manifest_digest
    with open_bundle(built.path, Platform("linux", other)) as bundle:
        assert bundle.images[0].manifest.digest == built.images[1].manifest_digest
    with pytest.raises(BundleError, match="no single one for linux/s390x"):
        open_bundle(built.path, Platform("linux", "s390x"))


def test_nested_index_target_unpacks_the_host_manifest(tmp_path: Path) -> None:
    other = "arm64" if host().architecture != "arm64" else "amd64"
    built = _archive(
        tmp_path,
        ImageSpec("x:1", [{"a": b"host"}]),
        ImageSpec("x:2", [{"a": b"other"}], architecture=other),
    )
    children = []
    for image in built.images:
        child = dict(image.manifest)
        child.pop("annotations")
        children.append(child)
    nested = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
    ).encode()
    digest = sha256(nested)
    blobs = {**built.blobs, digest: nested}
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_INDEX,
                "digest": digest,
                "size": len(nested),
                "annotations": {oci.ANNOTATION_IMAGE_NAME: NAME},
            }
        ],
    }
    write_layout(built.path, index, blobs)
    with open_bundle(built.path) as bundle:
        image = bundle.images[0]
        assert image.target.digest == digest
        assert image.manifest.digest == built.images[0].manifest_digest
        assert [c.digest for c in bundle.children[digest]] == [image.manifest.digest]
        assert [d.digest for d in bundle.upload_order()][-2:] == [image.manifest.digest, digest]


def test_encrypted_layers_are_rejected(tmp_path: Path) -> None:
    built = _archive(tmp_path)
    manifest = json.loads(built.blobs[built.images[0].manifest_digest])
    manifest["layers"][0]["mediaType"] += "+encrypted"
    data = json.dumps(manifest).encode()
    blobs = {d: b for d, b in built.blobs.items() if d != built.images[0].manifest_digest}
    blobs[sha256(data)] = data
    index = _index_of(built)
    index["manifests"][0].update(digest=sha256(data), size=len(data))
    write_layout(built.path, index, blobs)
    with pytest.raises(BundleError, match="unsupported media type"):
        open_bundle(built.path)
