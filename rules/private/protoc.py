"""Runs grpc_tools' protoc with the well-known types on the include path."""

import sys
from importlib import resources

from grpc_tools import protoc


def main(argv: list[str]) -> int:
    well_known = str(resources.files("grpc_tools") / "_proto")
    return protoc.main(["protoc", "--proto_path=" + well_known] + argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
