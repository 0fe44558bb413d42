"""A real, private containerd 1.6 for tests: own root, state, socket and runc root.

    with Containerd() as ctrd:
        ...  # ctrd.address, ctrd.root, ctrd.log_path

or, as a pytest fixture:

    @pytest.fixture
    def containerd():
        yield from containerd_fixture()
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, Mapping

import grpc
import tomli_w

from loader.api import (
    content_pb2,
    content_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    leases_pb2,
    leases_pb2_grpc,
    snapshots_pb2,
    snapshots_pb2_grpc,
)

CONTAINERD = "/usr/bin/containerd"
SHIM_SOCKET_DIR = Path("/run/containerd/s")
DISABLED_SNAPSHOTTERS = (
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
)
CRI = "io.containerd.grpc.v1.cri"


class ContainerdStartError(RuntimeError):
    """containerd did not come up; the message ends with its log tail."""


def _section(config: dict[str, Any], *keys: str) -> dict[str, Any]:
    node = config
    for key in keys:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    return node


def build_config(workdir: Path, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A version 2 config whose every path lives under workdir.

    base (e.g. a node image's config.toml parsed with tomllib) is kept except
    for what must be private to this instance.
    """
    config: dict[str, Any] = copy.deepcopy(dict(base)) if base else {}
    if config.get("version", 2) != 2:
        raise ValueError("only version = 2 containerd configs are supported")
    config["version"] = 2
    config["root"] = str(workdir / "root")
    config["state"] = str(workdir / "state")
    config["temp"] = str(workdir / "tmp")
    config["plugin_dir"] = ""
    config["imports"] = []
    disabled = list(config.get("disabled_plugins", []))
    config["disabled_plugins"] = disabled + [p for p in DISABLED_SNAPSHOTTERS if p not in disabled]
    grpc_section = _section(config, "grpc")
    grpc_section["address"] = str(workdir / "c.sock")
    grpc_section["tcp_address"] = ""
    _section(config, "ttrpc")["address"] = str(workdir / "c.sock.ttrpc")
    _section(config, "debug")["address"] = ""
    _section(config, "metrics")["address"] = ""
    _section(config, "plugins", "io.containerd.internal.v1.opt")["path"] = str(workdir / "opt")
    cri = _section(config, "plugins", CRI)
    cri["restrict_oom_score_adj"] = True
    cri["disable_apparmor"] = True
    cri["disable_tcp_service"] = True
    cri["stream_server_address"] = "127.0.0.1"
    cri["stream_server_port"] = "0"
    runc = _section(cri, "containerd", "runtimes", "runc")
    runc.setdefault("runtime_type", "io.containerd.runc.v2")
    options = _section(runc, "options")
    options["Root"] = str(workdir / "runc")
    options["SystemdCgroup"] = False
    return config


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    argv: list[str]


def _processes() -> list[_Proc]:
    procs: list[_Proc] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        procs.append(_Proc(int(entry.name), ppid, [a.decode(errors="replace") for a in argv if a]))
    return procs


def _arg(argv: list[str], flag: str) -> str | None:
    for i, a in enumerate(argv):
        if a in (flag, "-" + flag) and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "=") or a.startswith("-" + flag + "="):
            return a.split("=", 1)[1]
    return None


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if _alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _unescape(field: str) -> str:
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below directory, deepest first."""
    prefix = str(directory)
    found: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split(" ")[4])
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    found.reverse()  # later mounts may stack on earlier ones
    found.sort(key=lambda p: p.count("/"), reverse=True)
    return found


class Containerd:
    """A private containerd process; start() / stop() or use as a context manager."""

    def __init__(
        self,
        base_config: Mapping[str, Any] | None = None,
        *,
        binary: str = CONTAINERD,
        parent_dir: str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.binary = binary
        self.start_timeout = start_timeout
        if parent_dir is None:
            # Unix socket paths are limited to 108 bytes: avoid long temp dirs.
            parent_dir = tempfile.gettempdir()
            if len(parent_dir) > 60:
                parent_dir = "/tmp"
        self.workdir = Path(tempfile.mkdtemp(prefix="ctrd-", dir=parent_dir))
        self.config = build_config(self.workdir, base_config)
        self.address: str = self.config["grpc"]["address"]
        self.root = Path(self.config["root"])
        self.state = Path(self.config["state"])
        self.log_path = self.workdir / "containerd.log"
        self.config_path = self.workdir / "config.toml"
        self.process: subprocess.Popen[bytes] | None = None
        self._stopped = False
        if len(self.address.encode()) >= 108:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise ValueError(f"socket path too long: {self.address}")
        atexit.register(self.stop)

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> Containerd:
        """Write the config, start containerd, wait for its socket to answer."""
        (self.workdir / "tmp").mkdir(exist_ok=True)
        self.config_path.write_text(tomli_w.dumps(self.config))
        env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
        env["TMPDIR"] = str(self.workdir / "tmp")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ContainerdStartError(
                    f"containerd exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if self._answers():
                return
            time.sleep(0.1)
        raise ContainerdStartError(
            f"containerd did not answer in {self.start_timeout}s:\n{self.log_tail()}"
        )

    def _answers(self) -> bool:
        if not os.path.exists(self.address):
            return False
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(self.address)
        except OSError:
            return False
        try:
            self.state_reader().leases("default")
        except grpc.RpcError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the daemon (as a crash would), leaving its root and state as they are."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> Containerd:
        """Start the daemon again on the same root and state (after kill() or a crash)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("containerd is still running")
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def state_reader(self) -> StateReader:
        return StateReader(self.address)

    def stop(self) -> None:
        """Stop shims, containerd, unmount everything under the workdir, remove it."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        try:
            self._remove_tasks()
            self._stop_shims()
            self._stop_daemon()
            self._stop_shims()
        finally:
            leftover = self._unmount_all()
            if leftover:
                raise RuntimeError(f"still mounted, {self.workdir} kept: {leftover}")
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _ctr(self, *args: str) -> list[str]:
        result = subprocess.run(
            ["ctr", "-a", self.address, *args], capture_output=True, text=True, timeout=20
        )
        return result.stdout.split() if result.returncode == 0 else []

    def _remove_tasks(self) -> None:
        """Let runc delete our tasks (state and cgroups) while containerd still runs."""
        if self.process is None or self.process.poll() is not None or not shutil.which("ctr"):
            return
        try:
            for namespace in self._ctr("namespaces", "ls", "-q"):
                for task in self._ctr("-n", namespace, "tasks", "ls", "-q"):
                    self._ctr("-n", namespace, "tasks", "rm", "-f", task)
                for container in self._ctr("-n", namespace, "containers", "ls", "-q"):
                    self._ctr("-n", namespace, "containers", "rm", container)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def _stop_shims(self) -> None:
        procs = _processes()
        shims = [
            p
            for p in procs
            if p.argv
            and os.path.basename(p.argv[0]).startswith("containerd-shim")
            and _arg(p.argv, "-address") == self.address
        ]
        if not shims:
            return
        children: dict[int, list[int]] = {}
        for p in procs:
            children.setdefault(p.ppid, []).append(p.pid)
        descendants: list[int] = []
        todo = [s.pid for s in shims]
        while todo:
            for child in children.get(todo.pop(), []):
                descendants.append(child)
                todo.append(child)
        _kill(descendants, signal.SIGKILL)
        _wait_gone(descendants, 5)
        shim_pids = [s.pid for s in shims]
        _kill(shim_pids, signal.SIGTERM)
        _kill(_wait_gone(shim_pids, 5), signal.SIGKILL)
        _wait_gone(shim_pids, 5)
        for shim in shims:
            namespace, ident = _arg(shim.argv, "-namespace"), _arg(shim.argv, "-id")
            if namespace and ident:
                key = os.path.join(self.address, namespace, ident).encode()
                (SHIM_SOCKET_DIR / hashlib.sha256(key).hexdigest()).unlink(missing_ok=True)

    def _stop_daemon(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def _unmount_all(self) -> list[str]:
        for _ in range(5):
            points = mounts_under(self.workdir)
            if not points:
                return []
            for point in points:
                result = subprocess.run(["umount", point], capture_output=True)
                if result.returncode != 0:
                    subprocess.run(["umount", "-l", point], capture_output=True)
        return mounts_under(self.workdir)


def containerd_fixture(base_config: Mapping[str, Any] | None = None) -> Iterator[Containerd]:
    """Generator for a pytest fixture: yields a started containerd, always stops it."""
    instance = Containerd(base_config)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


class StateReader:
    """Reads containerd state through the gRPC API, for assertions."""

    def __init__(self, address: str) -> None:
        self.address = address

    def _call(self, stub_cls: Any, method: str, request: Any, namespace: str) -> Any:
        with grpc.insecure_channel(f"unix://{self.address}") as channel:
            stub = stub_cls(channel)
            return getattr(stub, method)(
                request, metadata=(("containerd-namespace", namespace),), timeout=10
            )

    def images(self, namespace: str) -> dict[str, images_pb2.Image]:
        resp = self._call(
            images_pb2_grpc.ImagesStub, "List", images_pb2.ListImagesRequest(), namespace
        )
        return {image.name: image for image in resp.images}

    def content(self, namespace: str, digest: str) -> content_pb2.Info | None:
        try:
            resp: content_pb2.InfoResponse = self._call(
                content_pb2_grpc.ContentStub,
                "Info",
                content_pb2.InfoRequest(digest=digest),
                namespace,
            )
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return resp.info

    def snapshot(
        self, namespace: str, key: str, snapshotter: str = "overlayfs"
    ) -> snapshots_pb2.Info | None:
        request = snapshots_pb2.StatSnapshotRequest(snapshotter=snapshotter, key=key)
        try:
            resp: snapshots_pb2.StatSnapshotResponse = self._call(
                snapshots_pb2_grpc.SnapshotsStub, "Stat", request, namespace
            )
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return resp.info

    def snapshots(self, namespace: str, snapshotter: str = "overlayfs") -> list[snapshots_pb2.Info]:
        request = snapshots_pb2.ListSnapshotsRequest(snapshotter=snapshotter)
        with grpc.insecure_channel(f"unix://{self.address}") as channel:
            stub = snapshots_pb2_grpc.SnapshotsStub(channel)
            stream = stub.List(request, metadata=(("containerd-namespace", namespace),), timeout=10)
            return [info for resp in stream for info in resp.info]

    def leases(self, namespace: str) -> list[leases_pb2.Lease]:
        resp = self._call(leases_pb2_grpc.LeasesStub, "List", leases_pb2.ListRequest(), namespace)
        return list(resp.leases)

    def collect_garbage(self, namespace: str) -> None:
        """Run containerd's garbage collection now (deleting a lease with sync)."""
        lease_id = f"testutil-gc-{uuid.uuid4().hex[:12]}"
        self._call(
            leases_pb2_grpc.LeasesStub, "Create", leases_pb2.CreateRequest(id=lease_id), namespace
        )
        request = leases_pb2.DeleteRequest(id=lease_id, sync=True)
        self._call(leases_pb2_grpc.LeasesStub, "Delete", request, namespace)
