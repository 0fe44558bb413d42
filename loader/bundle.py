"""A bundle's images: OCI layouts and docker archives, resolved for a platform and checked."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping

from loader import names, oci, safety
from loader.archive import Archive, Member, Sink, compression_of, open_archive
from loader.archive import normalize as normalize_name
from loader.errors import BundleError
from loader.oci import Descriptor
from loader.platforms import Platform, host

_BLOB_RE = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")
_HEX_JSON_RE = re.compile(r"^([0-9a-f]{64})\.json$")


@dataclass(frozen=True)
class Image:
    """One named image of a bundle and the manifest of it to unpack."""

    name: str
    target: Descriptor
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]


@dataclass
class Blob:
    """A blob the import needs: from an archive member, or made by the loader (data)."""

    desc: Descriptor
    member: Member | None = None
    data: bytes | None = None

    @property
    def verified(self) -> bool:
        """True once its content is known to hash to its digest."""
        return self.data is not None or (self.member is not None and self.member.digest is not None)


@dataclass
class Bundle:
    """An opened bundle; open_bundle() makes one."""

    path: Path
    archive: Archive
    format: str = "oci"
    images: list[Image] = field(default_factory=list)
    blobs: dict[str, Blob] = field(default_factory=dict)  # children before parents
    children: dict[str, list[Descriptor]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

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
        self.archive.close()

    @property
    def names(self) -> list[str]:
        return [image.name for image in self.images]

    def upload_order(self) -> list[Descriptor]:
        return [blob.desc for blob in self.blobs.values()]


def open_bundle(
    path: Path,
    platform: Platform | None = None,
    *,
    all_platforms: bool = False,
    sink: Sink | None = None,
    file_name: str | None = None,
) -> Bundle:
    """Open a bundle and check its structure; raises BundleError with the reason.

    Small blobs are verified here; large blobs are verified when they are read (by the sink
    of a compressed bundle, or by the importer).
    """
    archive = open_archive(path, sink)
    bundle = Bundle(path, archive)
    try:
        stem = names.bundle_stem(file_name or path.name)
        _Resolver(bundle, platform or host(), all_platforms, stem).run()
    except BaseException:
        archive.close()
        raise
    return bundle


def parse_json(data: bytes, what: str) -> Any:
    """One JSON document, within the size and depth limits of loader.safety."""
    return safety.parse_json(data, what)


class _Resolver:
    def __init__(self, bundle: Bundle, platform: Platform, all_platforms: bool, stem: str) -> None:
        self.bundle = bundle
        self.archive = bundle.archive
        self.platform = platform
        self.all_platforms = all_platforms
        self.stem = stem

    def run(self) -> None:
        if self.archive.get("index.json") is not None:
            self._oci()
        elif self.archive.get("manifest.json") is not None:
            self.bundle.format = "docker"
            self._docker()
        else:
            raise BundleError("neither index.json (OCI layout) nor manifest.json (docker archive)")
        if not self.bundle.images:
            raise BundleError("the bundle holds no image")

    # members and blobs

    def _json_member(self, name: str) -> Any:
        member = self.archive.get(name)
        if member is None:
            raise BundleError(f"missing {name}")
        return parse_json(self.archive.read(member), name)

    def _blob_member(self, digest: str) -> Member | None:
        return self.archive.get("blobs/" + digest.replace(":", "/"))

    def _require(self, desc: Descriptor) -> Member:
        member = self._blob_member(desc.digest)
        if member is None:
            raise BundleError(f"blob {desc.digest} is missing")
        if member.size != desc.size:
            raise BundleError(
                f"blob {desc.digest} has {member.size} bytes but its descriptor says {desc.size}"
            )
        if member.digest is not None and member.digest != desc.digest:
            raise BundleError(f"blob {desc.digest} is corrupted (content hashes to {member.digest})")
        return member

    def _present(self, desc: Descriptor) -> bool:
        member = self._blob_member(desc.digest)
        return member is not None and member.size == desc.size

    def _add_blob(self, desc: Descriptor, member: Member | None, data: bytes | None = None) -> None:
        self.bundle.blobs.setdefault(desc.digest, Blob(desc, member, data))

    def _blob_json(self, desc: Descriptor) -> Any:
        member = self._require(desc)
        return parse_json(self.archive.read(member), f"blob {desc.digest}")

    # OCI layout

    def _oci(self) -> None:
        layout = self._json_member("oci-layout") if self.archive.get("oci-layout") else None
        if layout is None:
            self.bundle.warnings.append("no oci-layout file")
        elif not isinstance(layout, dict) or not isinstance(layout.get("imageLayoutVersion"), str):
            raise BundleError("oci-layout has no imageLayoutVersion")
        elif layout["imageLayoutVersion"] != "1.0.0":
            self.bundle.warnings.append(
                f"oci-layout version {layout['imageLayoutVersion']!r} is not 1.0.0"
            )
        index = self._json_member("index.json")
        entries = descriptor_list(index, "manifests", "index.json")
        repo_tags = self._repo_tags_by_config()
        named: dict[str, list[Descriptor]] = {}
        for desc in entries:
            for name in self._oci_names(desc, repo_tags):
                named.setdefault(name, []).append(desc)
        for name, candidates in named.items():
            target = self._pick(name, candidates)
            self.bundle.images.append(self._oci_image(name, target))

    def _repo_tags_by_config(self) -> dict[str, list[str]]:
        """RepoTags of a manifest.json beside index.json, by config digest."""
        if self.archive.get("manifest.json") is None:
            return {}
        try:
            entries = self._json_member("manifest.json")
        except BundleError:
            return {}
        tags: dict[str, list[str]] = {}
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
                continue
            match = _BLOB_RE.match(entry["Config"])
            if match and isinstance(entry.get("RepoTags"), list):
                tags[f"sha256:{match.group(1)}"] = [t for t in entry["RepoTags"] if isinstance(t, str)]
        return tags

    def _oci_names(self, desc: Descriptor, repo_tags: Mapping[str, list[str]]) -> list[str]:
        name = desc.annotations.get(oci.ANNOTATION_IMAGE_NAME, "")
        if name:
            return [name]
        ref = desc.annotations.get(oci.ANNOTATION_REF_NAME, "")
        if ref:
            full = names.from_ref_name(ref, self.stem)
            if full:
                return [full]
            self.bundle.warnings.append(f"manifest {desc.digest}: unusable ref name {ref!r}")
        if repo_tags and self._present(desc):
            manifest = self._manifest_for(desc.digest, desc, record=False)
            if manifest is not None:
                config = self._blob_json(manifest).get("config", {})
                found = [names.normalize(t) for t in repo_tags.get(config.get("digest", ""), [])]
                if any(found):
                    return [n for n in found if n]
        if desc.platform and not self.platform.matches(desc.platform):
            return []  # an unnamed manifest of another platform
        full = names.by_digest(self.stem, desc.digest)
        self.bundle.warnings.append(f"manifest {desc.digest} has no name; imported as {full}")
        return [full]

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

    def _manifest_for(self, name: str, target: Descriptor, record: bool = True) -> Descriptor | None:
        """The manifest to unpack for target; adds other platforms' complete manifests if asked."""
        if oci.is_manifest(target.media_type):
            return target
        if not oci.is_index(target.media_type):
            raise BundleError(f"{name}: unsupported media type {target.media_type}")
        index = self._blob_json(target)
        children = descriptor_list(index, "manifests", f"index {target.digest}")
        manifests = [c for c in children if oci.is_manifest(c.media_type)]
        if len(manifests) == 1 and not manifests[0].platform:
            chosen = manifests[0]
        else:
            matching = [c for c in manifests if self.platform.matches(c.platform)]
            if not matching:
                if any(oci.is_index(c.media_type) for c in children):
                    raise BundleError(
                        f"{name}: index {target.digest} holds indexes: indexes nested more"
                        f" than {safety.MAX_INDEX_DEPTH} deep below index.json are not supported"
                    )
                raise BundleError(f"{name}: index {target.digest} has no manifest for {self.platform}")
            chosen = matching[0]
        if not record:
            return chosen
        kept = [chosen]
        if self.all_platforms:
            for child in manifests:
                if child.digest != chosen.digest and self._complete(child):
                    self._manifest_content(child)
                    kept.append(child)
        self.bundle.children[target.digest] = kept
        return chosen

    def _complete(self, manifest: Descriptor) -> bool:
        """True if a manifest, its config and layers are all in the archive."""
        if not self._present(manifest):
            return False
        body = self._blob_json(manifest)
        try:
            config = descriptor(body.get("config"), "config")
            layers = descriptor_list(body, "layers", "manifest")
        except BundleError:
            return False
        return all(self._present(d) for d in (config, *layers))

    def _manifest_content(self, manifest: Descriptor) -> tuple[Descriptor, list[Descriptor], Any]:
        body = self._blob_json(manifest)
        if not isinstance(body, dict):
            raise BundleError(f"manifest {manifest.digest} is not a JSON object")
        config = descriptor(body.get("config"), f"manifest {manifest.digest} config")
        if not oci.is_config(config.media_type):
            raise BundleError(
                f"manifest {manifest.digest}: unsupported config type {config.media_type}"
            )
        layers = descriptor_list(body, "layers", f"manifest {manifest.digest}")
        for layer in layers:
            if not oci.is_layer(layer.media_type) or oci.is_encrypted_layer(layer.media_type):
                raise BundleError(f"layer {layer.digest}: unsupported media type {layer.media_type}")
            self._add_blob(layer, self._require(layer))
        config_body = self._blob_json(config)
        self._add_blob(config, self._require(config))
        self._add_blob(manifest, self._require(manifest))
        self.bundle.children[manifest.digest] = [config, *layers]
        return config, layers, config_body

    def _oci_image(self, name: str, target: Descriptor) -> Image:
        manifest = self._manifest_for(name, target)
        assert manifest is not None
        config, layers, config_body = self._manifest_content(manifest)
        if target.digest != manifest.digest:
            self._add_blob(target, self._require(target))
        diff_ids = config_diff_ids(config_body, config.digest)
        if len(diff_ids) != len(layers):
            raise BundleError(
                f"config {config.digest} lists {len(diff_ids)} diff_ids for {len(layers)} layers"
            )
        return Image(name, target, manifest, config, tuple(layers), tuple(diff_ids))

    # docker archive (docker save, skopeo docker-archive, oci_load tarballs)

    def _docker(self) -> None:
        entries = self._json_member("manifest.json")
        if not isinstance(entries, list) or not entries:
            raise BundleError("manifest.json is not a non-empty list")
        for i, entry in enumerate(entries):
            what = f"manifest.json entry {i}"
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
                raise BundleError(f"{what} has no Config")
            layer_paths = entry.get("Layers")
            if not isinstance(layer_paths, list) or not all(isinstance(p, str) for p in layer_paths):
                raise BundleError(f"{what} has no Layers list")
            config_member = self._docker_member(entry["Config"])
            config_data = self.archive.read(config_member)
            config_digest = oci.sha256_digest(config_data)
            self._check_named_digest(config_member, config_digest)
            config = Descriptor(oci.DOCKER_CONFIG, config_digest, len(config_data))
            diff_ids = config_diff_ids(parse_json(config_data, entry["Config"]), config_digest)
            if len(diff_ids) != len(layer_paths):
                raise BundleError(
                    f"{what}: config lists {len(diff_ids)} diff_ids for {len(layer_paths)} layers"
                )
            self._add_blob(config, config_member)
            layers = [
                self._docker_layer(self._docker_member(p), diff_id)
                for p, diff_id in zip(layer_paths, diff_ids)
            ]
            manifest_data = docker_manifest(config, layers)
            manifest = Descriptor(
                oci.DOCKER_MANIFEST, oci.sha256_digest(manifest_data), len(manifest_data)
            )
            self._add_blob(manifest, None, manifest_data)
            self.bundle.children[manifest.digest] = [config, *layers]
            tags = entry.get("RepoTags") or []
            found = [names.normalize(t) for t in tags if isinstance(t, str)]
            image_names = [n for n in found if n]
            if len(image_names) != len(tags):
                self.bundle.warnings.append(f"{what}: some RepoTags are not valid references")
            if not image_names:
                image_names = [names.by_digest(self.stem, manifest.digest)]
                self.bundle.warnings.append(
                    f"{what} has no name; imported as {image_names[0]}"
                )
            for name in image_names:
                image = Image(name, manifest, manifest, config, tuple(layers), tuple(diff_ids))
                self.bundle.images.append(image)

    def _docker_member(self, path: str) -> Member:
        member = self.archive.get(normalize_name(path))
        if member is None:
            raise BundleError(f"{path} is missing")
        return member

    def _check_named_digest(self, member: Member, digest: str) -> None:
        match = _BLOB_RE.match(member.name) or _HEX_JSON_RE.match(member.name)
        if match and f"sha256:{match.group(1)}" != digest:
            raise BundleError(f"{member.name} is corrupted (content hashes to {digest})")

    def _docker_layer(self, member: Member, diff_id: str) -> Descriptor:
        compression = compression_of(member.head)
        media_type = {
            "": "application/vnd.docker.image.rootfs.diff.tar",
            "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
        }[compression]
        match = _BLOB_RE.match(member.name)
        if member.digest is not None:
            digest = member.digest
        elif match:
            digest = f"sha256:{match.group(1)}"  # checked when it is read
        elif compression == "":
            digest = diff_id  # an uncompressed layer is its diff; checked when it is read
        else:
            digest = self.archive.hash(member)
        if match and digest != f"sha256:{match.group(1)}":
            raise BundleError(f"{member.name} is corrupted (content hashes to {digest})")
        if compression == "" and member.digest is not None and digest != diff_id:
            raise BundleError(f"layer {member.name} hashes to {digest} but the config says {diff_id}")
        desc = Descriptor(media_type, digest, member.size)
        self._add_blob(desc, member)
        return desc


def docker_manifest(config: Descriptor, layers: list[Descriptor]) -> bytes:
    """The Docker schema 2 manifest of a docker archive image (deterministic bytes)."""
    body = {
        "schemaVersion": 2,
        "mediaType": oci.DOCKER_MANIFEST,
        "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
        "layers": [
            {"mediaType": d.media_type, "digest": d.digest, "size": d.size} for d in layers
        ],
    }
    return json.dumps(body, indent=3).encode()


def descriptor(value: Any, what: str) -> Descriptor:
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


def descriptor_list(body: Any, key: str, what: str) -> list[Descriptor]:
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise BundleError(f"{what} has no {key} list")
    return [descriptor(item, what) for item in body[key]]


def config_diff_ids(config: Any, digest: str) -> list[str]:
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(oci.valid_digest(d) for d in diff_ids):
        raise BundleError(f"config {digest} has no valid rootfs.diff_ids")
    return list(diff_ids)
