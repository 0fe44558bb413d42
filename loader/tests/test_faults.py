"""Faults and races: containerd or the loader SIGKILLed mid-import, two loaders at once,
containerd not up yet. Against real containerds.

containerd is killed at sampled points of the loader's sequence of API calls (before a call,
or a moment into it). PRESEED_FAULT_POINTS=all tries every call, both ways; a number N
tries N points spread over the sequence. The default is a handful, to keep CI quick.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from loader.client import Client
from loader.main import main
from loader.tests.helpers import assert_unpacked
from loader.tests.runner import finish, loader_argv, run, start
from testutil.containerd import Containerd, StateReader, containerd_fixture
from testutil.oci_archive import BuiltArchive, ImageSpec, build_archive

NS = "k8s.io"
# The client calls a kill point can precede (every call that changes containerd's state).
HOOKED = (
    "lease_create",
    "content_write",
    "content_set_labels",
    "snapshot_prepare",
    "diff_apply",
    "snapshot_commit",
    "image_create",
    "image_update",
    "lease_delete",
)
DEFAULT_POINTS = 6


def _random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _bundles(preseed: Path) -> list[BuiltArchive]:
    """Three bundles: shared base layer, multi-chunk layers, one compressed as a whole."""
    (preseed / NS).mkdir(parents=True, exist_ok=True)
    base = {"base.txt": b"shared base\n"}
    a = build_archive(
        preseed / NS / "a.tar",
        [
            ImageSpec(
                "docker.io/library/fault-a:1",
                [base, {"big.bin": _random_bytes(3 << 20, 1)}, {"a.txt": b"a\n"}],
            )
        ],
    )
    b = build_archive(
        preseed / NS / "b.tar",
        [
            ImageSpec("docker.io/library/fault-b:1", [base, {"b.txt": b"b\n"}]),
            ImageSpec("docker.io/library/fault-b2:1", [{"b2.bin": _random_bytes(1 << 20, 2)}]),
        ],
    )
    c = build_archive(
        preseed / NS / "c.tar",
        [ImageSpec("docker.io/library/fault-c:1", [{"c.bin": _random_bytes(2 << 20, 3)}])],
    )
    compressed = c.path.with_name("c.tar.gz")
    compressed.write_bytes(gzip.compress(c.path.read_bytes(), mtime=0))
    c.path.unlink()
    c.path = compressed
    return [a, b, c]


def _complete(state: StateReader, namespace: str, target: Any) -> str | None:
    """Why an image record's target is not complete and unpacked, or None."""
    manifest = state.content(namespace, target.digest)
    if manifest is None:
        return f"manifest {target.digest} missing"
    labels = dict(manifest.labels)
    config = labels.get("containerd.io/gc.ref.content.config")
    if config is None:
        return f"manifest {target.digest} has no config label"
    config_info = state.content(namespace, config)
    if config_info is None:
        return f"config {config} missing"
    for key, layer in labels.items():
        if not key.startswith("containerd.io/gc.ref.content.l."):
            continue
        if state.content(namespace, layer) is None:
            return f"layer {layer} missing"
    top = config_info.labels.get("containerd.io/gc.ref.snapshot.overlayfs")
    if top is None:
        return f"config {config} has no snapshot label"
    snap = state.snapshot(namespace, top)
    if snap is None or snap.kind != 3:
        return f"snapshot {top} not committed"
    return None


def _half_images(state: StateReader) -> list[str]:
    """Every image record of NS that is not complete."""
    found = []
    for name, image in state.images(NS).items():
        why = _complete(state, NS, image.target)
        if why:
            found.append(f"{name}: {why}")
    return found


class Watcher:
    """Polls the image list while the loader runs; records any name seen before it was whole."""

    def __init__(self, address: str) -> None:
        self.state = StateReader(address)
        self.seen: set[str] = set()
        self.half: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                for name, image in self.state.images(NS).items():
                    if name in self.seen:
                        continue
                    why = _complete(self.state, NS, image.target)
                    self.seen.add(name)
                    if why:
                        self.half.append(f"{name}: {why}")
            except grpc.RpcError:
                time.sleep(0.01)  # containerd is down for a moment


def _assert_all_loaded(state: StateReader, built: list[BuiltArchive]) -> None:
    images = state.images(NS)
    for archive in built:
        for image in archive.images:
            assert images[image.name].target.digest == image.manifest_digest
            assert_unpacked(state, NS, image.diff_ids)
            assert _complete(state, NS, images[image.name].target) is None
    assert _half_images(state) == []


def _load(address: str, preseed: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    argv = ["--address", address, "--preseed-dir", str(preseed), "--timeout", "10"]
    rc = main([*argv, "--jobs", "1"])
    return rc, capsys.readouterr().err


class CallHook:
    """Wraps Client's state-changing calls; runs an action before call number `at`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self.at = -1
        self.action: Callable[[], None] = lambda: None
        for name in HOOKED:
            monkeypatch.setattr(Client, name, self._wrap(name, getattr(Client, name)))

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        hook = self

        def wrapper(self: Client, *args: Any, **kwargs: Any) -> Any:
            hook.calls.append(name)
            if len(hook.calls) - 1 == hook.at:
                hook.action()
            return method(self, *args, **kwargs)

        return wrapper


def _points(total: int) -> list[tuple[int, str]]:
    """Kill points (call index, 'before' or 'during') to try."""
    wanted = os.environ.get("PRESEED_FAULT_POINTS", "")
    every = [(i, mode) for i in range(total) for mode in ("before", "during")]
    if wanted == "all":
        return every
    count = int(wanted) if wanted.isdigit() else DEFAULT_POINTS
    step = max(1, len(every) // count)
    return every[step // 2 :: step][:count]


def _sequence(preseed: Path) -> list[str]:
    """The loader's state-changing calls for the fault corpus, from one clean run."""
    mp = pytest.MonkeyPatch()
    try:
        hook = CallHook(mp)
        with Containerd() as ctrd:
            args = ["--address", ctrd.address, "--preseed-dir", str(preseed), "--jobs", "1"]
            assert main(args) == 0
    finally:
        mp.undo()
    return hook.calls


def _kill_and_recover(
    preseed: Path,
    built: list[BuiltArchive],
    index: int,
    mode: str,
    call: str,
    capsys: pytest.CaptureFixture[str],
) -> list[str]:
    """Kill containerd at one point, restart it, load again; returns what went wrong."""
    problems: list[str] = []
    mp = pytest.MonkeyPatch()
    with Containerd() as ctrd:
        hook = CallHook(mp)
        hook.at = index
        timer = threading.Timer(0.005, ctrd.kill)
        hook.action = ctrd.kill if mode == "before" else timer.start
        with Watcher(ctrd.address) as watcher:
            rc, err = _load(ctrd.address, preseed, capsys)
            if mode == "during" and len(hook.calls) > index:
                timer.join()
        # Only the last lease delete can fail without failing the run (the lease expires).
        essential = call != "lease_delete" or rc != 0
        if "Traceback" in err or rc not in (0, 1) or (mode == "before" and essential and rc != 1):
            problems.append(f"killed run: exit code {rc}: {err[-2000:]}")
        ctrd.kill()
        ctrd.restart()
        state = ctrd.state_reader()
        problems += [f"after restart: {h}" for h in _half_images(state)]
        problems += [f"while importing: {h}" for h in watcher.half]
        hook.at = -1
        with Watcher(ctrd.address) as watcher:
            rc, err = _load(ctrd.address, preseed, capsys)
        if rc != 0:
            problems.append(f"run after restart: exit code {rc}: {err[-2000:]}")
        problems += [f"while importing again: {h}" for h in watcher.half]
        try:
            _assert_all_loaded(state, built)
        except (AssertionError, KeyError) as e:
            problems.append(f"after the run: {type(e).__name__}: {e}")
    mp.undo()
    return problems


def test_containerd_killed_then_restarted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preseed = tmp_path / "preseed"
    built = _bundles(preseed)
    sequence = _sequence(preseed)
    for name in ("lease_create", "content_write", "diff_apply", "snapshot_commit", "image_create"):
        assert name in sequence, sequence
    failures: dict[str, list[str]] = {}
    points = _points(len(sequence))
    for index, mode in points:
        problems = _kill_and_recover(preseed, built, index, mode, sequence[index], capsys)
        if problems:
            failures[f"{mode} call {index} ({sequence[index]})"] = problems
    assert failures == {}, json.dumps(failures, indent=1)
    assert len(points) >= min(DEFAULT_POINTS, 2 * len(sequence))


@pytest.fixture
def containerd_ready() -> Iterator[Containerd]:
    yield from containerd_fixture()


@pytest.mark.parametrize("when", ["lease", "content", "snapshot", "image"])
def test_loader_killed_then_run_again(
    containerd_ready: Containerd, tmp_path: Path, when: str
) -> None:
    ctrd = containerd_ready
    preseed = tmp_path / "preseed"
    built = _bundles(preseed)
    state = ctrd.state_reader()
    blobs = ctrd.root / "io.containerd.content.v1.content" / "blobs" / "sha256"
    ready: dict[str, Callable[[], bool]] = {
        "lease": lambda: bool(state.leases(NS)),
        "content": lambda: blobs.exists() and len(list(blobs.iterdir())) >= 3,
        "snapshot": lambda: any(s.kind == 3 for s in state.snapshots(NS)),
        "image": lambda: any(not n.startswith("sha256:") for n in state.images(NS)),
    }
    proc, err = start(loader_argv(ctrd.address, preseed, "--jobs", "1"))
    deadline = time.monotonic() + 60
    try:
        while not ready[when]() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
    finally:
        proc.kill()
    finished = finish(proc, err)
    killed = finished.rc == -9
    assert _half_images(state) == []
    again = run(loader_argv(ctrd.address, preseed))
    assert again.rc == 0, again.stderr
    _assert_all_loaded(state, built)
    if not killed:
        pytest.skip(f"the loader finished before the '{when}' point could be caught")


def test_two_loaders_at_once(containerd_ready: Containerd, tmp_path: Path) -> None:
    ctrd = containerd_ready
    preseed = tmp_path / "preseed"
    built = _bundles(preseed)
    children = [start(loader_argv(ctrd.address, preseed)) for _ in range(2)]
    results = [finish(proc, err) for proc, err in children]
    for result in results:
        assert result.rc == 0, result.stderr
        assert {r["result"] for r in result.records if r["msg"] == "bundle"} <= {
            "loaded",
            "unchanged",
        }
    state = ctrd.state_reader()
    _assert_all_loaded(state, built)
    assert state.leases(NS) == []
    # The same end state as one more, single run that finds nothing to do.
    before = {n: (i.target.digest, dict(i.labels)) for n, i in state.images(NS).items()}
    again = run(loader_argv(ctrd.address, preseed))
    assert again.rc == 0
    assert {r["result"] for r in again.records if r["msg"] == "bundle"} == {"unchanged"}
    after = {n: (i.target.digest, dict(i.labels)) for n, i in state.images(NS).items()}
    assert after == before


def _one_bundle(tmp_path: Path) -> Path:
    preseed = tmp_path / "preseed"
    (preseed / NS).mkdir(parents=True)
    build_archive(preseed / NS / "x.tar", [ImageSpec("docker.io/library/late:1", [{"x": b"x"}])])
    return preseed


def test_socket_refusing_is_a_bounded_wait_then_exit_2(tmp_path: Path) -> None:
    address = str(tmp_path / "refuse.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(address)  # bound, never listening: connections are refused
        t0 = time.monotonic()
        result = run(loader_argv(address, _one_bundle(tmp_path), timeout=2))
        elapsed = time.monotonic() - t0
    assert result.rc == 2, result.stderr
    assert 2 <= elapsed < 15
    (line,) = [r for r in result.records if r["level"] == "error"]
    assert line["msg"] == "containerd unreachable" and "did not answer within 2s" in line["error"]


def test_no_socket_yet_is_a_bounded_wait_then_exit_2(tmp_path: Path) -> None:
    address = str(tmp_path / "none.sock")
    t0 = time.monotonic()
    result = run(loader_argv(address, _one_bundle(tmp_path), timeout=1))
    assert result.rc == 2 and 1 <= time.monotonic() - t0 < 15
    (line,) = [r for r in result.records if r["level"] == "error"]
    assert line["msg"] == "containerd unreachable" and "did not answer within 1s" in line["error"]


def test_containerd_that_comes_up_late_is_waited_for(tmp_path: Path) -> None:
    preseed = _one_bundle(tmp_path)
    ctrd = Containerd()
    try:
        proc, err = start(loader_argv(ctrd.address, preseed, timeout=30))
        time.sleep(1.5)
        assert proc.poll() is None  # still waiting
        ctrd.start()
        result = finish(proc, err, timeout=60)
        assert result.rc == 0, result.stderr
        assert "docker.io/library/late:1" in ctrd.state_reader().images(NS)
    finally:
        ctrd.stop()
