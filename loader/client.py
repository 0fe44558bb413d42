"""Thin wrapper over containerd's gRPC services, scoped to a namespace and lease."""

from __future__ import annotations

import queue
import time
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import grpc
from google.protobuf import field_mask_pb2

from loader import errors
from loader.api import (
    content_pb2,
    content_pb2_grpc,
    diff_pb2,
    diff_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    leases_pb2,
    leases_pb2_grpc,
    namespaces_pb2,
    namespaces_pb2_grpc,
    snapshots_pb2,
    snapshots_pb2_grpc,
    types_pb2,
)
from loader.oci import Descriptor

NAMESPACE_HEADER = "containerd-namespace"
LEASE_HEADER = "containerd-lease"
CALL_TIMEOUT = 60.0
APPLY_TIMEOUT = 3600.0
_MAX_MESSAGE = 16 << 20

T = TypeVar("T")


def descriptor_proto(desc: Descriptor) -> types_pb2.Descriptor:
    return types_pb2.Descriptor(
        media_type=desc.media_type,
        digest=desc.digest,
        size=desc.size,
        annotations=dict(desc.annotations),
    )


class _Channel:
    """The shared channel and stubs of one containerd address."""

    def __init__(self, address: str) -> None:
        target = address if "://" in address else f"unix://{address}"
        self.channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.enable_retries", 0),
            ],
        )
        self.content = content_pb2_grpc.ContentStub(self.channel)
        self.images = images_pb2_grpc.ImagesStub(self.channel)
        self.leases = leases_pb2_grpc.LeasesStub(self.channel)
        self.snapshots = snapshots_pb2_grpc.SnapshotsStub(self.channel)
        self.diff = diff_pb2_grpc.DiffStub(self.channel)
        self.namespaces = namespaces_pb2_grpc.NamespacesStub(self.channel)


class Client:
    """containerd API calls; every call carries the namespace and lease headers."""

    def __init__(
        self,
        address: str,
        namespace: str = "default",
        lease: str | None = None,
        _channel: _Channel | None = None,
    ) -> None:
        self.address = address
        self.namespace = namespace
        self.lease = lease
        self._ch = _channel or _Channel(address)

    def close(self) -> None:
        self._ch.channel.close()

    def with_namespace(self, namespace: str) -> Client:
        return Client(self.address, namespace, None, self._ch)

    def with_lease(self, lease: str | None) -> Client:
        return Client(self.address, self.namespace, lease, self._ch)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        md = [(NAMESPACE_HEADER, self.namespace)]
        if self.lease:
            md.append((LEASE_HEADER, self.lease))
        return tuple(md)

    def _call(
        self,
        operation: str,
        method: Callable[..., T],
        request: object,
        timeout: float | None = CALL_TIMEOUT,
        wait_for_ready: bool = False,
    ) -> T:
        try:
            return method(
                request, metadata=self.metadata, timeout=timeout, wait_for_ready=wait_for_ready
            )
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e, operation) from None

    def wait_ready(self, timeout: float) -> None:
        """Block until containerd answers, with backoff; raises Unavailable."""
        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            remaining = deadline - time.monotonic()
            try:
                self._call(
                    "connect",
                    self._ch.leases.List,
                    leases_pb2.ListRequest(filters=["id==preseed-probe"]),
                    timeout=max(0.1, min(2.0, remaining)),
                    wait_for_ready=True,
                )
                return
            except (errors.Unavailable, errors.DeadlineExceeded) as e:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.Unavailable(
                        "connect",
                        f"containerd at {self.address} did not answer within {timeout:g}s",
                    ) from e
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 2.0)

    # content

    def content_info(self, digest: str) -> content_pb2.Info | None:
        request = content_pb2.InfoRequest(digest=digest)
        try:
            resp: content_pb2.InfoResponse = self._call(
                "content info", self._ch.content.Info, request
            )
        except errors.NotFound:
            return None
        return resp.info

    def content_set_labels(self, digest: str, labels: Mapping[str, str]) -> content_pb2.Info:
        """Set only the given labels of a blob (field paths labels.<key>)."""
        request = content_pb2.UpdateRequest(
            info=content_pb2.Info(digest=digest, labels=dict(labels)),
            update_mask=field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels]),
        )
        resp: content_pb2.UpdateResponse = self._call(
            "content update", self._ch.content.Update, request
        )
        return resp.info

    def content_abort(self, ref: str) -> None:
        self._call("content abort", self._ch.content.Abort, content_pb2.AbortRequest(ref=ref))

    def content_write(
        self,
        ref: str,
        size: int,
        expected: str,
        read_from: Callable[[int], Iterable[bytes]],
    ) -> tuple[int, str]:
        """Stream a blob into the content store; returns (bytes sent, digest committed).

        read_from(offset) yields the blob's bytes from offset, so an interrupted ingest is
        resumed where containerd left it. containerd checks the size and, if expected is
        given, the digest at commit. ALREADY_EXISTS is success (digest "" then).
        """
        stream = _WriteStream(self, ref)
        try:
            status = stream.send(
                content_pb2.WriteContentRequest(
                    action=content_pb2.STAT, ref=ref, total=size, expected=expected
                )
            )
            offset = status.offset
            if offset > size or (offset > 0 and status.total not in (0, size)):
                offset = 0
            sent = 0
            for chunk in read_from(offset) if offset < size else ():
                stream.send(
                    content_pb2.WriteContentRequest(
                        action=content_pb2.WRITE, ref=ref, offset=offset, data=chunk
                    )
                )
                offset += len(chunk)
                sent += len(chunk)
            if offset != size:
                raise errors.BundleError(f"blob {expected or ref}: read {offset} of {size} bytes")
            done = stream.send(
                content_pb2.WriteContentRequest(
                    action=content_pb2.COMMIT,
                    ref=ref,
                    offset=offset,
                    total=size,
                    expected=expected,
                )
            )
            stream.finish()
            return sent, done.digest
        except errors.AlreadyExists:
            return 0, ""
        finally:
            stream.cancel()

    # images

    def image_get(self, name: str) -> images_pb2.Image | None:
        request = images_pb2.GetImageRequest(name=name)
        try:
            resp: images_pb2.GetImageResponse = self._call(
                "image get", self._ch.images.Get, request
            )
        except errors.NotFound:
            return None
        return resp.image

    def image_list(self, filters: Sequence[str] = ()) -> list[images_pb2.Image]:
        request = images_pb2.ListImagesRequest(filters=list(filters))
        resp: images_pb2.ListImagesResponse = self._call(
            "image list", self._ch.images.List, request
        )
        return list(resp.images)

    def image_create(self, image: images_pb2.Image) -> images_pb2.Image:
        request = images_pb2.CreateImageRequest(image=image)
        resp: images_pb2.CreateImageResponse = self._call(
            "image create", self._ch.images.Create, request
        )
        return resp.image

    def image_update(self, image: images_pb2.Image) -> images_pb2.Image:
        request = images_pb2.UpdateImageRequest(image=image)
        resp: images_pb2.UpdateImageResponse = self._call(
            "image update", self._ch.images.Update, request
        )
        return resp.image

    def image_delete(self, name: str) -> None:
        request = images_pb2.DeleteImageRequest(name=name)
        self._call("image delete", self._ch.images.Delete, request)

    # namespaces

    def namespace_list(self) -> list[str]:
        resp: namespaces_pb2.ListNamespacesResponse = self._call(
            "namespace list", self._ch.namespaces.List, namespaces_pb2.ListNamespacesRequest()
        )
        return sorted(ns.name for ns in resp.namespaces)

    def image_set_labels(self, name: str, labels: Mapping[str, str]) -> images_pb2.Image:
        """Set only the given labels of an image record."""
        request = images_pb2.UpdateImageRequest(
            image=images_pb2.Image(name=name, labels=dict(labels)),
            update_mask=field_mask_pb2.FieldMask(paths=[f"labels.{k}" for k in labels]),
        )
        resp: images_pb2.UpdateImageResponse = self._call(
            "image update", self._ch.images.Update, request
        )
        return resp.image

    # leases

    def lease_create(self, lease_id: str, labels: Mapping[str, str]) -> str:
        request = leases_pb2.CreateRequest(id=lease_id, labels=dict(labels))
        resp: leases_pb2.CreateResponse = self._call(
            "lease create", self._ch.leases.Create, request
        )
        return resp.lease.id

    def lease_add_snapshot(self, snapshotter: str, key: str) -> None:
        """Hold a snapshot under this client's lease (so GC keeps it)."""
        assert self.lease, "lease_add_snapshot needs a lease"
        request = leases_pb2.AddResourceRequest(
            id=self.lease, resource=leases_pb2.Resource(id=key, type=f"snapshots/{snapshotter}")
        )
        self._call("lease add resource", self._ch.leases.AddResource, request)

    def lease_delete(self, lease_id: str) -> None:
        request = leases_pb2.DeleteRequest(id=lease_id)
        self._call("lease delete", self._ch.leases.Delete, request)

    def lease_list(self, filters: Sequence[str] = ()) -> list[leases_pb2.Lease]:
        request = leases_pb2.ListRequest(filters=list(filters))
        resp: leases_pb2.ListResponse = self._call("lease list", self._ch.leases.List, request)
        return list(resp.leases)

    # snapshots

    def snapshot_stat(self, snapshotter: str, key: str) -> snapshots_pb2.Info | None:
        request = snapshots_pb2.StatSnapshotRequest(snapshotter=snapshotter, key=key)
        try:
            resp: snapshots_pb2.StatSnapshotResponse = self._call(
                "snapshot stat", self._ch.snapshots.Stat, request
            )
        except errors.NotFound:
            return None
        return resp.info

    def snapshot_prepare(
        self, snapshotter: str, key: str, parent: str, labels: Mapping[str, str]
    ) -> list[types_pb2.Mount]:
        request = snapshots_pb2.PrepareSnapshotRequest(
            snapshotter=snapshotter, key=key, parent=parent, labels=dict(labels)
        )
        resp: snapshots_pb2.PrepareSnapshotResponse = self._call(
            "snapshot prepare", self._ch.snapshots.Prepare, request
        )
        return list(resp.mounts)

    def snapshot_commit(
        self, snapshotter: str, name: str, key: str, labels: Mapping[str, str]
    ) -> None:
        request = snapshots_pb2.CommitSnapshotRequest(
            snapshotter=snapshotter, name=name, key=key, labels=dict(labels)
        )
        self._call("snapshot commit", self._ch.snapshots.Commit, request)

    def snapshot_remove(self, snapshotter: str, key: str) -> None:
        request = snapshots_pb2.RemoveSnapshotRequest(snapshotter=snapshotter, key=key)
        self._call("snapshot remove", self._ch.snapshots.Remove, request)

    # diff

    def diff_apply(
        self, desc: Descriptor, mounts: Sequence[types_pb2.Mount]
    ) -> types_pb2.Descriptor:
        request = diff_pb2.ApplyRequest(diff=descriptor_proto(desc), mounts=list(mounts))
        resp: diff_pb2.ApplyResponse = self._call(
            "diff apply", self._ch.diff.Apply, request, timeout=APPLY_TIMEOUT
        )
        return resp.applied


class _WriteStream:
    """Lock-step driver of the bidirectional Content.Write stream."""

    _END = object()

    def __init__(self, client: Client, ref: str) -> None:
        self._requests: queue.Queue[object] = queue.Queue()
        self._operation = f"content write {ref}"
        self._responses: Iterator[content_pb2.WriteContentResponse] = client._ch.content.Write(
            self._iterate(), metadata=client.metadata
        )

    def _iterate(self) -> Iterator[content_pb2.WriteContentRequest]:
        while True:
            item = self._requests.get()
            if item is self._END:
                return
            assert isinstance(item, content_pb2.WriteContentRequest)
            yield item

    def send(self, request: content_pb2.WriteContentRequest) -> content_pb2.WriteContentResponse:
        self._requests.put(request)
        try:
            return next(self._responses)
        except StopIteration:
            raise errors.Unavailable(self._operation, "stream closed by containerd") from None
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e, self._operation) from None

    def finish(self) -> None:
        """Half-close the stream and wait for containerd to end it."""
        self._requests.put(self._END)
        try:
            for _ in self._responses:
                pass
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e, self._operation) from None

    def cancel(self) -> None:
        """End the stream (no-op once finished)."""
        self._requests.put(self._END)
        cancel = getattr(self._responses, "cancel", None)
        if cancel is not None:
            cancel()
