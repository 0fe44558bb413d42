"""Exceptions of the loader; each carries a one-line reason."""

from __future__ import annotations

import grpc


class LoaderError(Exception):
    """Base class of expected failures; str() is the reason."""


class UsageError(LoaderError):
    """Bad command line or preseed directory."""


class BundleError(LoaderError):
    """A bundle is malformed, incomplete or corrupted."""


class ImportFailed(LoaderError):
    """A bundle is fine but containerd could not take it in."""


class ContainerdError(LoaderError):
    """A containerd API call failed."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, operation: str, details: str) -> None:
        self.operation = operation
        self.details = details
        super().__init__(f"{operation}: {self.code.name.lower()}: {details}")


class NotFound(ContainerdError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ContainerdError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Unavailable(ContainerdError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ContainerdError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class InvalidArgument(ContainerdError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(ContainerdError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unimplemented(ContainerdError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Cancelled(ContainerdError):
    code = grpc.StatusCode.CANCELLED


_BY_CODE: dict[grpc.StatusCode, type[ContainerdError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        Unavailable,
        DeadlineExceeded,
        InvalidArgument,
        FailedPrecondition,
        Unimplemented,
        Cancelled,
    )
}


class _Other(ContainerdError):
    def __init__(self, code: grpc.StatusCode, operation: str, details: str) -> None:
        self.code = code
        super().__init__(operation, details)


def from_rpc_error(err: grpc.RpcError, operation: str) -> ContainerdError:
    """Map a gRPC error to our exception for that status code."""
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (err.details() if isinstance(err, grpc.Call) else None) or str(err)
    details = " ".join(details.split())
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(operation, details)
    return _Other(code, operation, details)
