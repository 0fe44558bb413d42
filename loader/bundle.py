"""Reading and verifying an OCI archive bundle (an uncompressed tar of an OCI layout)."""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Iterator, Mapping

from loader import oci
from loader.errors import BundleError
from loader.oci import Descriptor
from loader.platforms import Platform, host

CHUNK_SIZE = 1 << 20
MAX_JSON_SIZE = 16 << 20


@dataclass(frozen=True)
class Image:
    """One named image of a bundle, resolved to the manifest to unpack."""

    name: str
    target: Descriptor
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]


class Bundle:
    """An opened, verified bundle; use open_bundle() to make one."""

    def __init__(self, path: Path, tar: tarfile.TarFile) -> None:
        self.path = path
        self._tar = tar
        self._blobs: dict[str, tarfile.TarInfo] = {}
        self._children: dict[str, list[Descriptor]] = {}
        self._descriptors: dict[str, Descriptor] = {}
        self.images: list[Image] = []
        self.warnings: list[str] = []

    def __enter__(self) -> Bundle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._tar.close()

    @property
    def names(self) -> list[str]:
        return [image.name for image in self.images]

    def has_blob(self, digest: str) -> bool:
        return digest in self._blobs

    def blob_size(self, digest: str) -> int:
        return self._member(digest).size

    def children(self, digest: str) -> list[Descriptor]:
        """The children of an index or manifest that this bundle uses."""
        return list(self._children.get(digest, []))

    def upload_order(self) -> list[Descriptor]:
        """Every blob the images need, each once, children before parents."""
        ordered: dict[str, Descriptor] = {}
        for image in self.images:
            for desc in (*image.layers, image.config, image.manifest, image.target):
                ordered.setdefault(desc.digest, desc)
        return list(ordered.values())

    def read_blob(self, digest: str, limit: int = MAX_JSON_SIZE) -> bytes:
        member = self._member(digest)
        if member.size > limit:
            raise BundleError(f"blob {digest} is too large to parse ({member.size} bytes)")
        with self._open(member) as f:
            return f.read()

    def stream_blob(
        self, digest: str, offset: int = 0, chunk_size: int = CHUNK_SIZE
    ) -> Iterator[bytes]:
        """Yield a blob's bytes from offset in chunks."""
        member = self._member(digest)
        with self._open(member) as f:
            f.seek(offset)
            while True:
                chunk = f.read(chunk_size)
                if not chunk:
                    return
                yield chunk

    def _member(self, digest: str) -> tarfile.TarInfo:
        try:
            return self._blobs[digest]
        except KeyError:
            raise BundleError(f"blob {digest} is missing") from None

    def _open(self, member: tarfile.TarInfo) -> IO[bytes]:
        try:
            f = self._tar.extractfile(member)
        except (tarfile.TarError, KeyError) as e:
            raise BundleError(f"cannot read {member.name}: {e}") from None
        if f is None:
            raise BundleError(f"{member.name} is not a regular file")
        return f


def open_bundle(path: Path, platform: Platform | None = None) -> Bundle:
    """Open and fully verify a bundle; raises BundleError with the reason."""
    try:
        tar = tarfile.open(path, mode="r:")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BundleError(f"not a readable tar archive: {_reason(e)}") from None
    bundle = Bundle(path, tar)
    try:
        _Verifier(bundle, tar, platform or host()).run()
    except (tarfile.TarError, OSError, EOFError) as e:
        bundle.close()
        raise BundleError(f"cannot read archive: {_reason(e)}") from None
    except BaseException:
        bundle.close()
        raise
    return bundle


def _reason(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


class _Verifier:
    def __init__(self, bundle: Bundle, tar: tarfile.TarFile, platform: Platform) -> None:
        self.bundle = bundle
        self.tar = tar
        self.platform = platform
        self.files: dict[str, tarfile.TarInfo] = {}

    def run(self) -> None:
        self._index_members()
        self._check_layout()
        index = self._json_member("index.json")
        self._verify_blobs()
        self._resolve_images(index)

    def _index_members(self) -> None:
        for member in self.tar.getmembers():
            if member.isdir():
                continue
            name = _member_name(member.name)
            if name in self.files:
                raise BundleError(f"duplicate archive member {name}")
            self.files[name] = member
            if not name.startswith("blobs/"):
                continue
            parts = name.split("/")
            if len(parts) != 3:
                raise BundleError(f"unexpected archive member {name}")
            algorithm, encoded = parts[1], parts[2]
            if algorithm != "sha256":
                raise BundleError(f"unsupported digest algorithm in {name}")
            digest = f"sha256:{encoded}"
            if not oci.valid_digest(digest):
                raise BundleError(f"invalid blob name {name}")
            if not (member.isfile() or member.islnk()):
                raise BundleError(f"{name} is not a regular file")
            self.bundle._blobs[digest] = member

    def _check_layout(self) -> None:
        layout = self._json_member("oci-layout")
        if not isinstance(layout, dict) or not isinstance(layout.get("imageLayoutVersion"), str):
            raise BundleError("oci-layout has no imageLayoutVersion")
        if layout["imageLayoutVersion"] != "1.0.0":
            self.bundle.warnings.append(
                f"oci-layout version {layout['imageLayoutVersion']!r} is not 1.0.0"
            )

    def _json_member(self, name: str) -> Any:
        member = self.files.get(name)
        if member is None:
            raise BundleError(f"missing {name}")
        if member.size > MAX_JSON_SIZE:
            raise BundleError(f"{name} is too large ({member.size} bytes)")
        with self.bundle._open(member) as f:
            return _parse_json(f.read(), name)

    def _verify_blobs(self) -> None:
        for digest, member in self.bundle._blobs.items():
            hasher = hashlib.sha256()
            size = 0
            for chunk in self.bundle.stream_blob(digest):
                hasher.update(chunk)
                size += len(chunk)
            if size != member.size:
                raise BundleError(f"blob {digest} is truncated ({size} of {member.size} bytes)")
            actual = "sha256:" + hasher.hexdigest()
            if actual != digest:
                raise BundleError(f"blob {digest} is corrupted (content hashes to {actual})")

    def _blob_json(self, desc: Descriptor) -> Any:
        self._require(desc)
        return _parse_json(self.bundle.read_blob(desc.digest), f"blob {desc.digest}")

    def _require(self, desc: Descriptor) -> None:
        size = self.bundle.blob_size(desc.digest)
        if size != desc.size:
            raise BundleError(
                f"blob {desc.digest} has {size} bytes but its descriptor says {desc.size}"
            )
        self.bundle._descriptors.setdefault(desc.digest, desc)

    def _resolve_images(self, index: Any) -> None:
        entries = _descriptor_list(index, "manifests", "index.json")
        named: dict[str, list[Descriptor]] = {}
        for desc in entries:
            name = _image_name(desc.annotations)
            if not name:
                self.bundle.warnings.append(f"manifest {desc.digest} has no image name; ignored")
                continue
            named.setdefault(name, []).append(desc)
        if not named:
            raise BundleError("index.json names no image")
        for name, candidates in named.items():
            target = self._pick(name, candidates)
            manifest = self._manifest_for(name, target)
            self.bundle.images.append(self._image(name, target, manifest))

    def _pick(self, name: str, candidates: list[Descriptor]) -> Descriptor:
        distinct = {c.digest: c for c in candidates}
        if len(distinct) == 1:
            return candidates[0]
        matching = [c for c in distinct.values() if self.platform.matches(c.platform)]
        if len(matching) != 1:
            raise BundleError(
                f"{name}: {len(distinct)} manifests and no single one for {self.platform}"
            )
        return matching[0]

    def _manifest_for(self, name: str, target: Descriptor) -> Descriptor:
        if oci.is_manifest(target.media_type):
            return target
        if not oci.is_index(target.media_type):
            raise BundleError(f"{name}: unsupported media type {target.media_type}")
        index = self._blob_json(target)
        children = _descriptor_list(index, "manifests", f"index {target.digest}")
        manifests = [c for c in children if oci.is_manifest(c.media_type)]
        if len(manifests) == 1 and not manifests[0].platform:
            chosen = manifests[0]
        else:
            matching = [c for c in manifests if self.platform.matches(c.platform)]
            if not matching:
                raise BundleError(
                    f"{name}: index {target.digest} has no manifest for {self.platform}"
                )
            chosen = matching[0]
        self.bundle._children[target.digest] = [chosen]
        return chosen

    def _image(self, name: str, target: Descriptor, manifest: Descriptor) -> Image:
        body = self._blob_json(manifest)
        if not isinstance(body, dict):
            raise BundleError(f"manifest {manifest.digest} is not a JSON object")
        config = _descriptor(body.get("config"), f"manifest {manifest.digest} config")
        if not oci.is_config(config.media_type):
            raise BundleError(
                f"manifest {manifest.digest}: unsupported config type {config.media_type}"
            )
        layers = _descriptor_list(body, "layers", f"manifest {manifest.digest}")
        for layer in layers:
            if not oci.is_layer(layer.media_type) or oci.is_encrypted_layer(layer.media_type):
                raise BundleError(
                    f"layer {layer.digest}: unsupported media type {layer.media_type}"
                )
            self._require(layer)
        diff_ids = _diff_ids(self._blob_json(config), config.digest)
        if len(diff_ids) != len(layers):
            raise BundleError(
                f"config {config.digest} lists {len(diff_ids)} diff_ids for {len(layers)} layers"
            )
        self.bundle._children[manifest.digest] = [config, *layers]
        return Image(name, target, manifest, config, tuple(layers), tuple(diff_ids))


def _parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{what} is not valid JSON: {_reason(e)}") from None


def _image_name(annotations: Mapping[str, str]) -> str:
    name = annotations.get(oci.ANNOTATION_IMAGE_NAME, "")
    if name:
        return name
    ref = annotations.get(oci.ANNOTATION_REF_NAME, "")
    # A bare tag ("latest") is not a usable image name on its own.
    return ref if "/" in ref or ":" in ref else ""


def _descriptor(value: Any, what: str) -> Descriptor:
    if not isinstance(value, dict):
        raise BundleError(f"{what}: descriptor is not an object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise BundleError(f"{what}: descriptor has no mediaType")
    if not oci.valid_digest(digest):
        raise BundleError(f"{what}: descriptor has an invalid digest {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BundleError(f"{what}: descriptor {digest} has an invalid size")
    annotations = value.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise BundleError(f"{what}: descriptor {digest} has invalid annotations")
    platform = value.get("platform")
    if platform is not None and not isinstance(platform, dict):
        raise BundleError(f"{what}: descriptor {digest} has an invalid platform")
    assert isinstance(digest, str)
    return Descriptor(media_type, digest, size, dict(annotations), platform)


def _descriptor_list(body: Any, key: str, what: str) -> list[Descriptor]:
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise BundleError(f"{what} has no {key} list")
    return [_descriptor(item, what) for item in body[key]]


def _diff_ids(config: Any, digest: str) -> list[str]:
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(oci.valid_digest(d) for d in diff_ids):
        raise BundleError(f"config {digest} has no valid rootfs.diff_ids")
    return list(diff_ids)
