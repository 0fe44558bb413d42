"""Boots a node image in a folder: unpack its rootfs, run its loader against a containerd, and
run containers from its preseeded images through CRI."""

from __future__ import annotations

import pathlib
import subprocess
import tarfile
import time
import tomllib
import uuid
from dataclasses import dataclass

import grpc

from e2e.cri import api_pb2 as cri
from e2e.cri import api_pb2_grpc as cri_grpc

LOADER = "usr/bin/preseed-loader"
LOADER_UNIT = "etc/systemd/system/preseed-loader.service"
CONTAINERD_CONFIG = "etc/containerd/config.toml"
PRESEED_DIR = "containerd/preseed"


@dataclass(frozen=True)
class NodeRoot:
    """A node image unpacked into a folder."""

    path: pathlib.Path

    @classmethod
    def unpack(cls, image: pathlib.Path, dest: pathlib.Path) -> "NodeRoot":
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(image) as tar:
            tar.extractall(dest, filter="tar")
        return cls(dest)

    @property
    def loader(self) -> pathlib.Path:
        return self.path / LOADER

    @property
    def preseed_dir(self) -> pathlib.Path:
        return self.path / PRESEED_DIR

    def containerd_config(self) -> dict:
        with open(self.path / CONTAINERD_CONFIG, "rb") as f:
            return tomllib.load(f)

    def sandbox_image(self) -> str:
        return self.containerd_config()["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"]

    def loader_command(self, address: str) -> list[str]:
        """The ExecStart line of the node's loader unit, with its paths inside this folder and
        containerd's socket at `address`."""
        lines = (self.path / LOADER_UNIT).read_text().splitlines()
        exec_start = [line.split("=", 1)[1] for line in lines if line.startswith("ExecStart=")]
        if len(exec_start) != 1:
            raise ValueError(f"{LOADER_UNIT}: expected one ExecStart line, found {len(exec_start)}")
        words = exec_start[0].split()
        command = [str(self.path / words[0].lstrip("/"))]
        previous = ""
        for word in words[1:]:
            if previous == "--address":
                command.append(address)
            elif word.startswith("/"):
                command.append(str(self.path / word.lstrip("/")))
            else:
                command.append(word)
            previous = word
        return command

    def run_loader(self, address: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """Runs the node's own loader as its systemd unit would, on this folder's files."""
        return subprocess.run(
            self.loader_command(address) + list(extra),
            capture_output=True,
            text=True,
            timeout=300,
        )


@dataclass(frozen=True)
class StartedContainer:
    container_id: str
    image: str
    log_path: pathlib.Path


@dataclass(frozen=True)
class ContainerResult:
    exit_code: int
    log: str


class Cri:
    """A small CRI client: one host-network pod per container, cleaned up on close."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel("unix://" + address)
        self.runtime = cri_grpc.RuntimeServiceStub(self._channel)
        self.images = cri_grpc.ImageServiceStub(self._channel)
        self._pods: list[str] = []

    def close(self) -> None:
        for pod in reversed(self._pods):
            try:
                self.runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
                self.runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
            except grpc.RpcError:
                pass
        self._pods.clear()
        self._channel.close()

    def __enter__(self) -> "Cri":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def image_status(self, ref: str) -> cri.Image | None:
        response = self.images.ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image=ref)), timeout=30)
        return response.image if response.HasField("image") else None

    def list_images(self) -> list[cri.Image]:
        return list(self.images.ListImages(cri.ListImagesRequest(), timeout=30).images)

    def run_to_exit(self, image: str, log_dir: pathlib.Path, timeout: float = 60.0) -> ContainerResult:
        """Runs `image` in a new host-network pod until it exits; returns its exit code and log."""
        (started,) = self.start_in_one_pod([image], log_dir)
        return self.wait_exit(started, timeout)

    def start_in_one_pod(self, images: list[str], log_dir: pathlib.Path) -> list[StartedContainer]:
        """Starts one container from each image in one new host-network pod; does not wait."""
        name = "e2e-" + uuid.uuid4().hex[:8]
        host_network = cri.NamespaceOption(network=cri.NODE, pid=cri.CONTAINER, ipc=cri.POD)
        sandbox_config = cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name=name, uid=uuid.uuid4().hex, namespace="default"),
            hostname="",  # a host-network sandbox has no UTS namespace of its own
            log_directory=str(log_dir),
            linux=cri.LinuxPodSandboxConfig(
                security_context=cri.LinuxSandboxSecurityContext(namespace_options=host_network),
            ),
        )
        pod = self.runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=sandbox_config), timeout=120).pod_sandbox_id
        self._pods.append(pod)
        started = []
        for i, image in enumerate(images):
            container_name = f"{name}-{i}"
            container = self.runtime.CreateContainer(
                cri.CreateContainerRequest(
                    pod_sandbox_id=pod,
                    sandbox_config=sandbox_config,
                    config=cri.ContainerConfig(
                        metadata=cri.ContainerMetadata(name=container_name),
                        image=cri.ImageSpec(image=image),
                        log_path=container_name + ".log",
                        linux=cri.LinuxContainerConfig(
                            security_context=cri.LinuxContainerSecurityContext(namespace_options=host_network),
                        ),
                    ),
                ),
                timeout=120,
            ).container_id
            self.runtime.StartContainer(cri.StartContainerRequest(container_id=container), timeout=60)
            started.append(StartedContainer(container, image, log_dir / (container_name + ".log")))
        return started

    def wait_exit(self, started: StartedContainer, timeout: float = 60.0) -> ContainerResult:
        """Waits until a started container exits; returns its exit code and log."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.runtime.ContainerStatus(
                cri.ContainerStatusRequest(container_id=started.container_id), timeout=30
            ).status
            if status.state == cri.CONTAINER_EXITED:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"container {started.container_id} from {started.image} still"
                    f" {cri.ContainerState.Name(status.state)} after {timeout} s"
                )
            time.sleep(0.1)
        return ContainerResult(exit_code=status.exit_code, log=started.log_path.read_text())


def stdout_lines(cri_log: str) -> list[str]:
    """The payloads of the stdout lines of a CRI log (`<time> stdout F <text>`)."""
    lines = []
    for line in cri_log.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[1] == "stdout":
            lines.append(parts[3])
    return lines
