"""End to end: the node image's preseeded Go hello world runs through CRI, and nothing is pulled.

The test unpacks //e2e:node_image, starts a real containerd configured from the node image's own
config (with its own root, state and sockets), runs the loader shipped inside the node image on the
node image's preseed folder, and then runs the hello world image through CRI.
"""

from __future__ import annotations

import pathlib
import subprocess
from typing import Iterator

import pytest

from e2e.node import Cri, NodeRoot, stdout_lines
from testutil.containerd import Containerd

NODE_IMAGE = pathlib.Path(__file__).parent / "node_image.tar"
HELLO = "e2e.invalid/hello:latest"
PAUSE = "e2e.invalid/pause:latest"


def ctr_image_check(address: str, ref: str) -> tuple[str, str]:
    """containerd's own view of an image, through `ctr images check`: (status, unpacked)."""
    out = subprocess.run(
        ["ctr", "--address", address, "--namespace", "k8s.io", "images", "check", "name==" + ref],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    rows = [line.split() for line in out[1:] if line.strip()]
    assert len(rows) == 1, out
    ref_, type_, digest, status, *rest = rows[0]
    assert ref_ == ref
    return status, rest[-1]


@pytest.fixture
def node(tmp_path: pathlib.Path) -> NodeRoot:
    return NodeRoot.unpack(NODE_IMAGE, tmp_path / "rootfs")


@pytest.fixture
def containerd(node: NodeRoot) -> Iterator[Containerd]:
    with Containerd(base_config=node.containerd_config()) as instance:
        yield instance


def test_node_image_layout(node: NodeRoot) -> None:
    assert sorted(p.name for p in (node.preseed_dir / "k8s.io").iterdir()) == ["hello.tar", "pause.tar"]
    assert node.loader.stat().st_mode & 0o111
    unit = (node.path / "etc/systemd/system/preseed-loader.service").read_text()
    assert "After=containerd.service" in unit and "Before=kubelet.service" in unit
    assert (
        "ExecStart=/usr/bin/preseed-loader --address /run/containerd/containerd.sock"
        " --preseed-dir /containerd/preseed --manifest /etc/preseed/manifest.json --prune"
    ) in unit
    assert node.sandbox_image() == "e2e.invalid/pause:latest"


def test_hello_world_runs_with_no_pull(node: NodeRoot, containerd: Containerd, tmp_path: pathlib.Path) -> None:
    with Cri(containerd.address) as cri:
        assert cri.image_status(HELLO) is None, "the image must not be there before the loader runs"

        loaded = node.run_loader(containerd.address)
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        output = loaded.stdout + loaded.stderr
        assert "hello.tar" in output and "pause.tar" in output

        hello = cri.image_status(HELLO)
        assert hello is not None, "CRI does not see the preseeded hello world image"
        assert "e2e.invalid/hello:latest" in hello.repo_tags
        assert cri.image_status(PAUSE) is not None
        images_before = sorted(image.id for image in cri.list_images())

        # Unpacked at boot: the image's top snapshot is committed before any container exists.
        assert ctr_image_check(containerd.address, HELLO) == ("complete", "true")

        log_dir = tmp_path / "pod-logs"
        log_dir.mkdir()
        result = cri.run_to_exit(HELLO, log_dir)
        assert result.exit_code == 0, result.log
        assert stdout_lines(result.log) == ["Hello world"]

        # Nothing was pulled: the image set is unchanged and containerd never logged a pull.
        assert sorted(image.id for image in cri.list_images()) == images_before
    containerd_log = containerd.log_path.read_text()
    assert "PullImage" not in containerd_log


def test_loader_runs_again_cleanly(node: NodeRoot, containerd: Containerd) -> None:
    first = node.run_loader(containerd.address)
    assert first.returncode == 0, first.stdout + first.stderr
    again = node.run_loader(containerd.address)
    assert again.returncode == 0, again.stdout + again.stderr
    with Cri(containerd.address) as cri:
        assert cri.image_status(HELLO) is not None


def test_changed_bundle_is_refused_as_tampering(node: NodeRoot, containerd: Containerd) -> None:
    hello = node.preseed_dir / "k8s.io" / "hello.tar"
    with open(hello, "ab") as f:
        f.write(b"\0" * 512)
    loaded = node.run_loader(containerd.address)
    assert loaded.returncode == 1, loaded.stdout + loaded.stderr
    errors = [line for line in loaded.stderr.splitlines() if "level=error" in line]
    assert len(errors) == 1 and "hello.tar" in errors[0] and "tampering" in errors[0], loaded.stderr
    with Cri(containerd.address) as cri:
        assert cri.image_status(HELLO) is None
        assert cri.image_status(PAUSE) is not None
