import hashlib

from loader import oci
from loader.oci import Descriptor


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_chain_ids_follow_the_oci_definition() -> None:
    a, b, c = _sha("a"), _sha("b"), _sha("c")
    ab = _sha(f"{a} {b}")
    assert oci.chain_ids([]) == []
    assert oci.chain_ids([a]) == [a]
    assert oci.chain_ids([a, b, c]) == [a, ab, _sha(f"{ab} {c}")]


def test_chain_id_of_a_known_layer_pair() -> None:
    # ChainID(A|B) = sha256("<ChainID(A)> <DiffID(B)>")
    a = "sha256:" + "1" * 64
    b = "sha256:" + "2" * 64
    expected = "sha256:" + hashlib.sha256((a + " " + b).encode()).hexdigest()
    assert oci.chain_ids([a, b])[1] == expected


def test_child_gc_labels_for_manifest_and_index() -> None:
    config = Descriptor(oci.OCI_CONFIG, _sha("c"), 1)
    layers = [Descriptor(oci.OCI_LAYER_PREFIX + "v1.tar+gzip", _sha(str(i)), 1) for i in range(2)]
    assert oci.child_gc_labels([config, *layers]) == {
        "containerd.io/gc.ref.content.config": config.digest,
        "containerd.io/gc.ref.content.l.0": layers[0].digest,
        "containerd.io/gc.ref.content.l.1": layers[1].digest,
    }
    manifests = [
        Descriptor(oci.OCI_MANIFEST, _sha("m0"), 1),
        Descriptor(oci.DOCKER_MANIFEST, _sha("m1"), 1),
    ]
    assert oci.child_gc_labels(manifests) == {
        "containerd.io/gc.ref.content.m.0": manifests[0].digest,
        "containerd.io/gc.ref.content.m.1": manifests[1].digest,
    }


def test_media_type_classes() -> None:
    assert oci.is_layer("application/vnd.docker.image.rootfs.diff.tar.gzip")
    assert oci.is_layer("application/vnd.oci.image.layer.v1.tar+zstd")
    assert oci.is_encrypted_layer("application/vnd.oci.image.layer.v1.tar+gzip+encrypted")
    assert not oci.is_layer(oci.OCI_CONFIG)
    assert oci.is_index(oci.DOCKER_MANIFEST_LIST) and oci.is_manifest(oci.DOCKER_MANIFEST)
    assert oci.valid_digest("sha256:" + "a" * 64)
    assert not oci.valid_digest("sha256:" + "A" * 64)
