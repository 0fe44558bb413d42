"""The containerd fixture itself: its config, and that stop() leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from loader.main import main
from testutil.containerd import Containerd, _processes, build_config, mounts_under
from testutil.oci_archive import ImageSpec, build_archive

NODE_CONFIG = """
version = 2
root = "/var/lib/containerd"
disabled_plugins = ["io.containerd.internal.v1.tracing"]
imports = ["/etc/containerd/conf.d/*.toml"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "example.invalid/pause:1"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true
"""


def test_build_config_keeps_the_base_and_moves_every_path(tmp_path: Path) -> None:
    config = build_config(tmp_path, tomllib.loads(NODE_CONFIG))
    assert config["root"] == str(tmp_path / "root") and config["state"] == str(tmp_path / "state")
    assert config["grpc"]["address"] == str(tmp_path / "c.sock")
    assert config["ttrpc"]["address"].startswith(str(tmp_path))
    assert config["debug"]["address"] == "" and config["metrics"]["address"] == ""
    assert config["imports"] == []
    assert config["plugins"]["io.containerd.internal.v1.opt"]["path"] == str(tmp_path / "opt")
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "example.invalid/pause:1"
    assert cri["restrict_oom_score_adj"] is True and cri["disable_apparmor"] is True
    options = cri["containerd"]["runtimes"]["runc"]["options"]
    assert options == {"Root": str(tmp_path / "runc"), "SystemdCgroup": False}
    assert config["disabled_plugins"][0] == "io.containerd.internal.v1.tracing"
    for name in ("btrfs", "zfs", "devmapper", "aufs"):
        assert f"io.containerd.snapshotter.v1.{name}" in config["disabled_plugins"]
    with pytest.raises(ValueError):
        build_config(tmp_path, {"version": 1})


def _ours(address: str) -> list[int]:
    return [p.pid for p in _processes() if address in p.argv]


def test_stop_kills_running_containers_and_unmounts(
    hello_binary: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() != 0 or shutil.which("ctr") is None:
        pytest.skip("needs root and ctr")
    preseed = tmp_path / "preseed"
    (preseed / "default").mkdir(parents=True)
    spec = ImageSpec(
        "example.com/sleeper:1",
        [{"hello": (hello_binary.read_bytes(), 0o755)}],
        entrypoint=["/hello"],
    )
    build_archive(preseed / "default" / "sleeper.tar", [spec])
    ctrd = Containerd(base_config=tomllib.loads(NODE_CONFIG))
    with ctrd:
        assert main(["--address", ctrd.address, "--preseed-dir", str(preseed)]) == 0
        ctr = ["ctr", "-a", ctrd.address, "-n", "default"]
        subprocess.run(
            [*ctr, "run", "-d", "example.com/sleeper:1", "sleeper", "/hello", "sleep"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        tasks = subprocess.run(
            [*ctr, "tasks", "ls"], check=True, capture_output=True, text=True
        ).stdout
        assert "RUNNING" in tasks
        assert mounts_under(ctrd.workdir), "a running container has its rootfs mounted"
        assert _ours(ctrd.address)
    assert _ours(ctrd.address) == []
    assert mounts_under(ctrd.workdir) == []
    assert not ctrd.workdir.exists()
    assert not Path("/run/containerd/runc/default/sleeper").exists()
    capsys.readouterr()
