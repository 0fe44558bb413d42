import grpc
import pytest

from loader import errors


class FakeRpcError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self):  # pragma: no cover - unused
        return None

    def trailing_metadata(self):  # pragma: no cover - unused
        return None

    def is_active(self) -> bool:  # pragma: no cover - unused
        return False

    def time_remaining(self):  # pragma: no cover - unused
        return None

    def cancel(self) -> bool:  # pragma: no cover - unused
        return False

    def add_callback(self, callback) -> bool:  # pragma: no cover - unused
        return False


@pytest.mark.parametrize(
    "code, cls",
    [
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
    ],
)
def test_status_codes_map_to_our_exceptions(code: grpc.StatusCode, cls: type) -> None:
    err = errors.from_rpc_error(FakeRpcError(code, "content sha256:x:\n not found"), "content info")
    assert type(err) is cls
    assert str(err) == f"content info: {code.name.lower()}: content sha256:x: not found"


def test_other_codes_keep_their_name() -> None:
    err = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.INTERNAL, "boom"), "diff apply")
    assert isinstance(err, errors.ContainerdError)
    assert err.code == grpc.StatusCode.INTERNAL and str(err) == "diff apply: internal: boom"
