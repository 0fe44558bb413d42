"""Runs pytest on the test files named on the command line, as a Bazel test."""

import os
import sys

import pytest


def main() -> int:
    args = ["-p", "no:cacheprovider", "-q", "-rfEs"]
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args.append("--junitxml=" + xml)
    return pytest.main(args + sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
