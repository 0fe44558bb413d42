"""Import of one bundle: content, GC labels, unpacked snapshots, then image records."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
import time
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

from loader import oci, state, verified
from loader.api import images_pb2, snapshots_pb2
from loader.archive import CHUNK_SIZE, Member, Reader, hash_stream
from loader.bundle import Blob, Bundle, Image, open_bundle
from loader.client import Client, descriptor_proto
from loader.errors import (
    AlreadyExists,
    BundleError,
    ContainerdError,
    FailedPrecondition,
    ImportFailed,
    NotFound,
    Unavailable,
)
from loader.oci import Descriptor
from loader.platforms import Platform, host

LEASE_TTL = timedelta(hours=1)
LOCK_WAIT = 600.0
_BLOB_RE = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")


@dataclass
class Options:
    """What shapes an import."""

    snapshotter: str = "overlayfs"
    platform: Platform | None = None
    all_platforms: bool = False
    pin: bool = True
    lease_ttl: timedelta = LEASE_TTL
    chunk_size: int = CHUNK_SIZE

    def variant(self) -> str:
        """The part of a bundle's fingerprint that depends on the options."""
        return "all" if self.all_platforms else str(self.platform or host())


@dataclass
class ImportStats:
    """What an import did; filled in as it goes (from several threads), useful after a failure."""

    names: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    format: str = ""
    unchanged: bool = False
    manifest: str = ""  # how the manifest's sha256 was checked: hashed, recorded, or not
    bytes_written: int = 0
    blobs_written: int = 0
    blobs_present: int = 0
    layers_unpacked: int = 0
    layers_present: int = 0
    images_changed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)


@dataclass
class Pending:
    """A prepared bundle: content and snapshots are in, image records not yet written."""

    namespace: str
    file_name: str
    fingerprint: str
    images: list[Image] = field(default_factory=list)
    current: state.Current | None = None
    lease: str | None = None
    verified: str | None = None  # the preseed.dev/verified label its records get


def _unique() -> str:
    return f"{time.time_ns() % 1_000_000_000}-{secrets.token_urlsafe(3)}"


def _done(value: object = None) -> Future[object]:
    future: Future[object] = Future()
    future.set_result(value)
    return future


class Importer:
    """Imports bundles into one containerd, the way containerd's client does."""

    def __init__(
        self, client: Client, options: Options | None = None, pool: Executor | None = None
    ) -> None:
        self.client = client
        self.options = options or Options()
        self.pool = pool
        # Blobs being written and snapshots being unpacked by this process: one worker each.
        self._busy: dict[tuple[str, ...], threading.Event] = {}
        self._busy_lock = threading.Lock()

    @contextmanager
    def _exclusive(self, *key: str) -> Iterator[None]:
        """Run the body for this key in one thread at a time (others wait, then look again)."""
        while True:
            with self._busy_lock:
                other = self._busy.get(key)
                if other is None:
                    mine = self._busy[key] = threading.Event()
                    break
            other.wait()
        try:
            yield
        finally:
            with self._busy_lock:
                del self._busy[key]
            mine.set()

    # prepare: everything but the image records

    def prepare(
        self,
        namespace: str,
        path: Path,
        stats: ImportStats,
        file_name: str | None = None,
        sha256: str | None = None,
    ) -> Pending:
        """Content and snapshots of a bundle, or nothing if containerd holds it unchanged.

        With sha256 (the manifest's), the bundle must match it (verified.Tampering if not):
        hashed, unless its records show these bytes were hashed before.
        """
        file_name = file_name or path.name
        scoped = self.client.with_namespace(namespace)
        # Everything below is bound to the file as it is now: its checks compare to this stat.
        st = os.stat(path) if sha256 is not None else None
        fp = state.fingerprint(path, self.options.variant())
        pending = Pending(namespace, file_name, fp)
        current = state.check_current(
            scoped,
            scoped.image_list(),
            file_name,
            fp,
            self.options.snapshotter,
            self.options.pin,
        )
        check: verified.Check | None = None
        if sha256 is not None and st is not None:
            check = verified.check(path, sha256, st, current.images if current else None)
            stats.manifest = check.how
            pending.verified = check.label
        if current is not None:
            stats.unchanged = True
            stats.names = [i.name for i in current.images]
            pending.current = current
            return pending
        pending.lease = self._create_lease(scoped)
        try:
            leased = scoped.with_lease(pending.lease)
            with open_bundle(
                path,
                self.options.platform,
                all_platforms=self.options.all_platforms,
                sink=lambda member, reader: self._sink(leased, member, reader, stats),
                file_name=file_name,
            ) as bundle:
                stats.names = bundle.names
                stats.format = bundle.format
                if not bundle.archive.seekable:
                    stats.format += "+" + bundle.archive.compression
                stats.warnings.extend(bundle.warnings)
                self._load(leased, bundle, stats)
                pending.images = list(bundle.images)
            if check is not None:
                verified.unchanged_since(path, check)
        except BaseException:
            self._delete_lease(scoped, pending.lease, stats)
            raise
        return pending

    def _load(self, client: Client, bundle: Bundle, stats: ImportStats) -> None:
        uploads = {
            digest: self._submit(self._put_blob, client, bundle, blob, stats)
            for digest, blob in bundle.blobs.items()
        }
        try:
            unpacked: set[str] = set()
            for image in bundle.images:
                if image.manifest.digest not in unpacked:
                    self._unpack(client, image, stats, uploads)
                    unpacked.add(image.manifest.digest)
        finally:
            errors = [f.exception() for f in uploads.values()]
        for error in errors:
            if error is not None:
                raise error
        for digest in bundle.blobs:
            children = bundle.children.get(digest)
            if children:
                client.content_set_labels(digest, oci.child_gc_labels(children))

    def _submit(self, fn, *args) -> Future[object]:  # type: ignore[no-untyped-def]
        if self.pool is None:
            try:
                return _done(fn(*args))
            except BaseException as e:
                future: Future[object] = Future()
                future.set_exception(e)
                return future
        return self.pool.submit(fn, *args)

    def _create_lease(self, client: Client) -> str:
        expire = datetime.now(timezone.utc) + self.options.lease_ttl
        labels = {oci.LABEL_GC_EXPIRE: expire.strftime("%Y-%m-%dT%H:%M:%SZ")}
        return client.lease_create(f"preseed-{_unique()}", labels)

    def _delete_lease(self, client: Client, lease: str | None, stats: ImportStats) -> None:
        if lease is None:
            return
        try:
            client.lease_delete(lease)
        except ContainerdError as e:
            stats.warnings.append(f"lease {lease} not deleted ({e}); it expires by itself")

    # content

    def _sink(self, client: Client, member: Member, reader: Reader, stats: ImportStats) -> str:
        """A large member of a compressed bundle, met once while streaming: upload it."""
        match = _BLOB_RE.match(member.name)
        expected = f"sha256:{match.group(1)}" if match else ""
        hasher_box: list[str] = []
        used = [False]

        def read_from(offset: int) -> Iterator[bytes]:
            if offset != 0 or used[0]:
                raise ImportFailed(f"{member.name}: cannot resume a streamed blob")
            used[0] = True
            hasher = hashlib.sha256()
            got = 0
            while True:
                chunk = reader.read(self.options.chunk_size)
                if not chunk:
                    break
                hasher.update(chunk)
                got += len(chunk)
                yield chunk
            if got != member.size:
                raise BundleError(f"{member.name} is truncated ({got} of {member.size} bytes)")
            hasher_box.append("sha256:" + hasher.hexdigest())

        ref = f"preseed-stream-{_unique()}"
        try:
            # ALREADY_EXISTS (the store has it; now held by our lease) comes before any data.
            sent, committed = client.content_write(ref, member.size, expected, read_from)
        except FailedPrecondition:
            self._abort_quietly(client, ref)
            digest = hasher_box[0] if hasher_box else "another digest"
            raise BundleError(f"blob {expected} is corrupted (content hashes to {digest})") from None
        except BaseException:
            self._abort_quietly(client, ref)
            raise
        if not hasher_box:  # the store had it already: read it all the same, to verify it
            stats.add(blobs_present=1)
            return hash_stream(reader, member.size)
        if committed:
            stats.add(bytes_written=sent, blobs_written=1)
        else:
            stats.add(blobs_present=1)
        return hasher_box[0]

    def _put_blob(self, client: Client, bundle: Bundle, blob: Blob, stats: ImportStats) -> None:
        member = blob.member
        if member is not None and member.data is None and member.offset is None:
            return  # streamed into the store by _sink already
        # Another bundle of this run may be writing it: wait, then it answers ALREADY_EXISTS.
        with self._exclusive("blob", client.namespace, blob.desc.digest):
            self._put_blob_once(client, bundle, blob, stats)

    def _put_blob_once(
        self, client: Client, bundle: Bundle, blob: Blob, stats: ImportStats
    ) -> None:
        desc = blob.desc
        member = blob.member
        ref = f"preseed-{desc.digest}"
        archive = bundle.archive

        def read_from(offset: int) -> Iterator[bytes]:
            if blob.data is not None:
                for pos in range(offset, len(blob.data), self.options.chunk_size):
                    yield blob.data[pos : pos + self.options.chunk_size]
                return
            assert member is not None
            yield from archive.chunks(member, offset, self.options.chunk_size)

        size = desc.size
        try:
            # A blob already in the store answers ALREADY_EXISTS, and is then held by our lease.
            sent = self._write_when_unlocked(client, ref, size, desc.digest, read_from)
            if sent is None:
                stats.add(blobs_present=1)
                self._verify_present(bundle, blob)
                return
        except FailedPrecondition:
            # A stale partial ingest under our ref (e.g. from a crash) failed the digest check,
            # or the blob itself is corrupted: drop the ingest and write it once more whole.
            self._abort_quietly(client, ref)
            try:
                sent, _ = client.content_write(ref, size, desc.digest, read_from)
            except FailedPrecondition:
                self._abort_quietly(client, ref)
                actual = archive.hash(member) if member is not None else "?"
                raise BundleError(
                    f"blob {desc.digest} is corrupted (content hashes to {actual})"
                ) from None
            except BaseException:
                self._abort_quietly(client, ref)
                raise
        except BaseException:
            self._abort_quietly(client, ref)
            raise
        stats.add(bytes_written=sent, blobs_written=1)

    def _write_when_unlocked(
        self,
        client: Client,
        ref: str,
        size: int,
        digest: str,
        read_from: Callable[[int], Iterable[bytes]],
    ) -> int | None:
        """Write a blob; while another process holds its ref, wait. None: it appeared."""
        delay = 0.05
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                sent, committed = client.content_write(ref, size, digest, read_from)
                return sent if committed else None
            except Unavailable as e:
                if "locked" not in e.details or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _verify_present(self, bundle: Bundle, blob: Blob) -> None:
        """A blob the store had already: check the bundle's copy all the same."""
        if blob.verified or blob.member is None:
            return
        actual = bundle.archive.hash(blob.member)
        if actual != blob.desc.digest:
            raise BundleError(f"blob {blob.desc.digest} is corrupted (content hashes to {actual})")

    def _abort_quietly(self, client: Client, ref: str) -> None:
        try:
            client.content_abort(ref)
        except ContainerdError:
            pass

    # snapshots

    def _unpack(
        self,
        client: Client,
        image: Image,
        stats: ImportStats,
        uploads: dict[str, Future[object]],
    ) -> None:
        snapshotter = self.options.snapshotter
        chain = oci.chain_ids(image.diff_ids)
        parent = ""
        for layer, diff_id, chain_id in zip(image.layers, image.diff_ids, chain):
            # Images of a run share base layers: one bundle unpacks a chain ID, and the others
            # wait for it and then find the snapshot, instead of unpacking it again meanwhile.
            with self._exclusive("snapshot", client.namespace, snapshotter, chain_id):
                self._unpack_layer(client, layer, diff_id, chain_id, parent, stats, uploads)
            parent = chain_id
        uploads[image.config.digest].result()
        if chain:
            label = oci.snapshot_gc_label(snapshotter)
            client.content_set_labels(image.config.digest, {label: chain[-1]})

    def _unpack_layer(
        self,
        client: Client,
        layer: Descriptor,
        diff_id: str,
        chain_id: str,
        parent: str,
        stats: ImportStats,
        uploads: dict[str, Future[object]],
    ) -> None:
        snapshotter = self.options.snapshotter
        info = client.snapshot_stat(snapshotter, chain_id)
        if info is None:
            uploads[layer.digest].result()
            if self._apply_layer(client, layer, diff_id, chain_id, parent):
                stats.add(layers_unpacked=1)
            else:
                stats.add(layers_present=1)
        elif info.kind != snapshots_pb2.COMMITTED:
            raise ImportFailed(f"snapshot {chain_id} exists but is not committed")
        else:
            # Hold it under our lease, then make sure GC did not take it meanwhile.
            client.lease_add_snapshot(snapshotter, chain_id)
            if client.snapshot_stat(snapshotter, chain_id) is None:
                uploads[layer.digest].result()
                self._apply_layer(client, layer, diff_id, chain_id, parent)
                stats.add(layers_unpacked=1)
            else:
                stats.add(layers_present=1)

    def _apply_layer(
        self, client: Client, layer: Descriptor, diff_id: str, chain_id: str, parent: str
    ) -> bool:
        """Unpack one layer as snapshot chain_id; False if it appeared meanwhile."""
        snapshotter = self.options.snapshotter
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
                mounts = client.snapshot_prepare(snapshotter, key, parent, labels)
                break
            except AlreadyExists:
                if client.snapshot_stat(snapshotter, chain_id) is not None:
                    return False
            except ContainerdError as e:
                # After a crash of containerd, overlayfs may hand out the id of a folder it
                # made but never recorded ("file exists"); the next id is free.
                if "file exists" not in e.details:
                    raise
        if mounts is None:
            raise ImportFailed(f"cannot prepare a snapshot for {chain_id}")
        try:
            applied = client.diff_apply(layer, mounts)
            if applied.digest != diff_id:
                raise ImportFailed(
                    f"layer {layer.digest} unpacks to {applied.digest or 'nothing'}"
                    f" but the config says {diff_id}"
                )
            client.snapshot_commit(snapshotter, chain_id, key, labels)
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
            client.snapshot_remove(self.options.snapshotter, key)
        except ContainerdError:
            pass

    # publish: the image records, then the lease goes

    def publish(self, pending: Pending, stats: ImportStats) -> None:
        """Write the image records of a prepared bundle (or refresh pins), drop its lease."""
        scoped = self.client.with_namespace(pending.namespace)
        try:
            if pending.current is not None:
                for image in pending.current.images:
                    labels = {}
                    if image.name in pending.current.missing_pins:
                        labels[state.LABEL_PINNED] = state.PINNED
                    wanted = pending.verified
                    if wanted is not None and image.labels.get(verified.LABEL_VERIFIED) != wanted:
                        labels[verified.LABEL_VERIFIED] = wanted
                    if labels:
                        scoped.image_set_labels(image.name, labels)
                        stats.add(images_changed=1)
                return
            for image in pending.images:
                self._publish_image(scoped, pending, image, stats)
        finally:
            self._delete_lease(scoped, pending.lease, stats)

    def abandon(self, pending: Pending, stats: ImportStats) -> None:
        """Give up a prepared bundle: its lease goes, its content is left to GC."""
        self._delete_lease(self.client.with_namespace(pending.namespace), pending.lease, stats)

    def _publish_image(
        self, client: Client, pending: Pending, image: Image, stats: ImportStats
    ) -> None:
        target = descriptor_proto(image.target)
        existing = client.image_get(image.name)
        labels = dict(existing.labels) if existing is not None else {}
        ours = state.our_labels(
            pending.namespace,
            pending.file_name,
            pending.fingerprint,
            len(pending.images),
            image.manifest.digest,
            self.options.pin,
        )
        if pending.verified is not None:
            ours[verified.LABEL_VERIFIED] = pending.verified
        else:
            # Written from bytes no one checked against a manifest in this run.
            labels.pop(verified.LABEL_VERIFIED, None)
        unchanged = existing is not None and dict(existing.labels) == labels | ours
        if unchanged and existing is not None and existing.target == target:
            return
        record = images_pb2.Image(name=image.name, target=target, labels=labels | ours)
        try:
            client.image_update(record)
        except NotFound:
            try:
                client.image_create(record)
            except AlreadyExists:
                # Another loader created it in between (two runs at once): update it.
                client.image_update(record)
        stats.add(images_changed=1)
