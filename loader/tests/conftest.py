"""Shared fixtures; generates the gRPC modules into a temp dir if they are not importable."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]


def _ensure_generated() -> None:
    if importlib.util.find_spec("loader.api.content_pb2") is not None:
        return
    import grpc_tools
    import loader

    out = Path(tempfile.mkdtemp(prefix="loader-gen-"))
    atexit.register(shutil.rmtree, out, True)
    protos = sorted(str(p.relative_to(REPO)) for p in (REPO / "loader" / "api").glob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ],
        cwd=REPO,
        check=True,
    )
    sys.path.append(str(out))
    loader.__path__.append(str(out / "loader"))
    paths = [str(REPO), str(out), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)


_ensure_generated()

from testutil.containerd import Containerd, containerd_fixture  # noqa: E402


def _can_run_containerd() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not Path("/usr/bin/containerd").exists():
        return "needs /usr/bin/containerd"
    return None


@pytest.fixture
def containerd() -> Iterator[Containerd]:
    """A private containerd for one test."""
    reason = _can_run_containerd()
    if reason:
        pytest.skip(reason)
    yield from containerd_fixture()


HELLO_GO = """package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sleep" {
		time.Sleep(time.Hour)
	}
	fmt.Println("hello from a preseeded image")
}
"""


@pytest.fixture(scope="session")
def hello_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("needs go to build a static binary")
    work = tmp_path_factory.mktemp("hello-go")
    (work / "main.go").write_text(HELLO_GO)
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GO111MODULE": "off",
        "GOCACHE": str(work / "cache"),
        "HOME": str(work),
    }
    subprocess.run(
        [go, "build", "-o", "hello", "main.go"], cwd=work, env=env, check=True, capture_output=True
    )
    return work / "hello"
