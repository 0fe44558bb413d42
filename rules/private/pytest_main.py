"""Runs pytest on the test files named on the command line, as a Bazel test."""

import os
import shutil
import sys
import tempfile

import pytest


def _mounted_below(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4].startswith(path + "/") for line in f)


def main() -> int:
    args = ["-p", "no:cacheprovider", "-q", "-rfEs"]
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args.append("--junitxml=" + xml)
    if "TEST_TMPDIR" not in os.environ:
        return pytest.main(args + sys.argv[1:])
    # A private temp root per test run: pytest's shared default lets concurrent tests clean up
    # each other's folders. It stays short, since tests put unix sockets below it.
    basetemp = tempfile.mkdtemp(prefix="pytest-", dir="/tmp")
    try:
        return pytest.main(args + ["--basetemp=" + basetemp] + sys.argv[1:])
    finally:
        if not _mounted_below(basetemp):
            shutil.rmtree(basetemp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
