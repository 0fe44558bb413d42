"""Import of one bundle: content, GC labels, unpacked snapshots, then image records."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from loader import oci
from loader.api import images_pb2, snapshots_pb2
from loader.bundle import CHUNK_SIZE, Bundle, Image, open_bundle
from loader.client import Client, descriptor_proto
from loader.errors import (
    AlreadyExists,
    ContainerdError,
    FailedPrecondition,
    ImportFailed,
    NotFound,
)
from loader.oci import Descriptor
from loader.platforms import Platform

LEASE_TTL = timedelta(hours=1)


@dataclass
class ImportStats:
    """What an import did; filled in as it goes, so it is useful after a failure too."""

    names: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bytes_written: int = 0
    blobs_written: int = 0
    blobs_present: int = 0
    layers_unpacked: int = 0
    layers_present: int = 0
    images_changed: int = 0


def _unique() -> str:
    return f"{time.time_ns() % 1_000_000_000}-{secrets.token_urlsafe(3)}"


class Importer:
    """Imports bundles into one containerd, the way containerd's client does."""

    def __init__(
        self,
        client: Client,
        snapshotter: str = "overlayfs",
        platform: Platform | None = None,
        lease_ttl: timedelta = LEASE_TTL,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.client = client
        self.snapshotter = snapshotter
        self.platform = platform
        self.lease_ttl = lease_ttl
        self.chunk_size = chunk_size

    def import_bundle(self, namespace: str, path: Path, stats: ImportStats) -> None:
        """Import path into namespace; raises LoaderError subclasses on failure."""
        with open_bundle(path, self.platform) as bundle:
            stats.names = bundle.names
            stats.warnings.extend(bundle.warnings)
            scoped = self.client.with_namespace(namespace)
            lease = self._create_lease(scoped)
            try:
                leased = scoped.with_lease(lease)
                self._upload(leased, bundle, stats)
                self._label_content(leased, bundle)
                unpacked: set[str] = set()
                for image in bundle.images:
                    if image.manifest.digest not in unpacked:
                        self._unpack(leased, image, stats)
                        unpacked.add(image.manifest.digest)
                self._publish(scoped, bundle, stats)
            finally:
                self._delete_lease(scoped, lease, stats)

    def _create_lease(self, client: Client) -> str:
        expire = datetime.now(timezone.utc) + self.lease_ttl
        labels = {oci.LABEL_GC_EXPIRE: expire.strftime("%Y-%m-%dT%H:%M:%SZ")}
        return client.lease_create(f"preseed-{_unique()}", labels)

    def _delete_lease(self, client: Client, lease: str, stats: ImportStats) -> None:
        try:
            client.lease_delete(lease)
        except ContainerdError as e:
            stats.warnings.append(f"lease {lease} not deleted ({e}); it expires by itself")

    def _upload(self, client: Client, bundle: Bundle, stats: ImportStats) -> None:
        for desc in bundle.upload_order():
            if client.content_info(desc.digest) is not None:
                stats.blobs_present += 1
                continue
            ref = f"preseed-{desc.digest}"

            def read_from(offset: int, digest: str = desc.digest) -> Iterator[bytes]:
                return bundle.stream_blob(digest, offset, self.chunk_size)

            try:
                stats.bytes_written += client.content_write(ref, desc, read_from)
            except FailedPrecondition:
                # A stale partial ingest under our ref (e.g. from a crash) failed the
                # digest check: drop it and write the blob once more from the start.
                self._abort_quietly(client, ref)
                try:
                    stats.bytes_written += client.content_write(ref, desc, read_from)
                except BaseException:
                    self._abort_quietly(client, ref)
                    raise
            except BaseException:
                self._abort_quietly(client, ref)
                raise
            stats.blobs_written += 1

    def _abort_quietly(self, client: Client, ref: str) -> None:
        try:
            client.content_abort(ref)
        except ContainerdError:
            pass

    def _label_content(self, client: Client, bundle: Bundle) -> None:
        for desc in bundle.upload_order():
            children = bundle.children(desc.digest)
            if children:
                client.content_set_labels(desc.digest, oci.child_gc_labels(children))

    def _unpack(self, client: Client, image: Image, stats: ImportStats) -> None:
        chain = oci.chain_ids(image.diff_ids)
        parent = ""
        for layer, diff_id, chain_id in zip(image.layers, image.diff_ids, chain):
            info = client.snapshot_stat(self.snapshotter, chain_id)
            if info is None:
                if self._apply_layer(client, layer, diff_id, chain_id, parent):
                    stats.layers_unpacked += 1
                else:
                    stats.layers_present += 1
            elif info.kind != snapshots_pb2.COMMITTED:
                raise ImportFailed(f"snapshot {chain_id} exists but is not committed")
            else:
                stats.layers_present += 1
            parent = chain_id
        if chain:
            label = oci.snapshot_gc_label(self.snapshotter)
            client.content_set_labels(image.config.digest, {label: chain[-1]})

    def _apply_layer(
        self, client: Client, layer: Descriptor, diff_id: str, chain_id: str, parent: str
    ) -> bool:
        """Unpack one layer as snapshot chain_id; False if it appeared meanwhile."""
        labels = {
            k: v
            for k, v in layer.annotations.items()
            if k.startswith(oci.INHERITED_SNAPSHOT_PREFIX)
        }
        labels[oci.LABEL_SNAPSHOT_REF] = chain_id
        key = ""
        mounts = None
        for _ in range(3):
            key = f"extract-{_unique()} {chain_id}"
            try:
                mounts = client.snapshot_prepare(self.snapshotter, key, parent, labels)
                break
            except AlreadyExists:
                if client.snapshot_stat(self.snapshotter, chain_id) is not None:
                    return False
        if mounts is None:
            raise ImportFailed(f"cannot prepare a snapshot for {chain_id}")
        try:
            applied = client.diff_apply(layer, mounts)
            if applied.digest != diff_id:
                raise ImportFailed(
                    f"layer {layer.digest} unpacks to {applied.digest or 'nothing'}"
                    f" but the config says {diff_id}"
                )
            client.snapshot_commit(self.snapshotter, chain_id, key, labels)
        except AlreadyExists:
            self._remove_quietly(client, key)
            return False
        except BaseException:
            self._remove_quietly(client, key)
            raise
        client.content_set_labels(layer.digest, {oci.LABEL_UNCOMPRESSED: diff_id})
        return True

    def _remove_quietly(self, client: Client, key: str) -> None:
        try:
            client.snapshot_remove(self.snapshotter, key)
        except ContainerdError:
            pass

    def _publish(self, client: Client, bundle: Bundle, stats: ImportStats) -> None:
        for image in bundle.images:
            target = descriptor_proto(image.target)
            existing = client.image_get(image.name)
            if existing is not None and existing.target == target:
                continue
            record = images_pb2.Image(
                name=image.name,
                target=target,
                labels=dict(existing.labels) if existing is not None else {},
            )
            try:
                client.image_update(record)
            except NotFound:
                client.image_create(record)
            stats.images_changed += 1
