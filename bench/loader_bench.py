"""Benchmark: the loader beside `ctr images import` on the same preseed folder.

    bazel run //bench:loader_bench -- [--scale 1] [--repeat 3] [--workdir DIR] [--jobs N]

Generates a preseed folder (cached in --workdir): 8 application images and a pause image in
two namespaces (k8s.io and system), about 1 GiB of bundles at scale 1. The images share base
layers (an OS layer in all of them, one of two runtime layers in each half), have gzip and
uncompressed layers, and run a tiny static hello binary. Then, --repeat times, alternating
which goes first, each on a fresh private containerd whose CRI uses the preseeded pause image:

- the loader: a cold run, the time from its start until CRI has started a container from every
  k8s.io image (all in one pod), then a second run with nothing changed; its peak RSS; then
  two more runs with --manifest (a manifest of the folder in the node image's format): the
  first hashes every bundle and records that, the second is the second boot of a node image;
- `ctr images import` of every bundle into its namespace, one after the other (it also
  unpacks): the same three figures.

Prints a table of medians with min-max and the ratios loader/ctr; the last line is
`cold_vs_ctr=R warm_vs_ctr=R loader_rss_mib=N`.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e.node import Cri, stdout_lines  # noqa: E402
from loader.platforms import host  # noqa: E402
from testutil.containerd import Containerd  # noqa: E402
from testutil.oci_archive import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_LAYER_GZIP  # noqa: E402
from testutil.oci_archive import OCI_MANIFEST  # noqa: E402

MIB = 1 << 20
CRI_NAMESPACE = "k8s.io"
OTHER_NAMESPACE = "system"
PAUSE = "bench.invalid/pause:1"
FORMAT = 2  # bump when the generated folder changes shape

# Uncompressed MiB at scale 1. Compressed, the text-like/binary mix shrinks to about 55%.
BASE_OS_MIB = 96
RUNTIME_MIB = 64
APP_MIB = 64
EXTRA_MIB = 16


def _runfile(relative: str) -> Path:
    """A data file of this binary, under Bazel (runfiles) or from a built workspace."""
    candidates = []
    for env in ("RUNFILES_DIR", "TEST_SRCDIR"):
        if os.environ.get(env):
            candidates.append(Path(os.environ[env]) / "preseed" / relative)
    here = Path(__file__).parent.parent  # runfiles root of the workspace, unresolved
    candidates += [here / relative, Path.cwd() / relative, Path.cwd() / "bazel-bin" / relative]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise SystemExit(f"loader_bench: {relative} not found; run it with `bazel run //bench:loader_bench`")


# Generation


def _corpus(rng: random.Random, size: int) -> bytes:
    """Text-like bytes (words, paths, numbers) that compress about as well as real files."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(4000)]
    out = io.StringIO()
    written = 0
    while written < size:
        line = " ".join(rng.choices(words, k=rng.randint(4, 14)))
        if rng.random() < 0.3:
            line += f" /usr/lib/{rng.choice(words)}/{rng.choice(words)}.so.{rng.randint(0, 99)}"
        if rng.random() < 0.3:
            line += f" {rng.getrandbits(64):x} {rng.random():.6f}"
        out.write(line + "\n")
        written += len(line) + 1
    return out.getvalue().encode()[:size]


def _layer_tar(rng: random.Random, corpus: bytes, raw_size: int, prefix: str) -> bytes:
    """An uncompressed layer tar: binaries (random bytes) and text files, about 1:1."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        total, i = 0, 0
        while total < raw_size:
            size = min(rng.randint(64 << 10, 2 * MIB), raw_size - total)
            if i % 2 == 0:
                data = rng.randbytes(size * 2 // 5)
                data += corpus[rng.randrange(0, len(corpus) - size) :][: size - len(data)]
            else:
                start = rng.randrange(0, len(corpus) - size)
                data = corpus[start : start + size]
            info = tarfile.TarInfo(f"{prefix}/{i:05d}.bin")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
            total += len(data)
            i += 1
    return buf.getvalue()


def _file_tar(name: str, data: bytes, mode: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Layer:
    """One layer blob on disk."""

    path: Path
    desc: dict[str, object]
    diff_id: str


@dataclass
class Bundle:
    namespace: str
    path: Path
    name: str


@dataclass
class Generated:
    preseed: Path
    bundles: list[Bundle]
    bundle_bytes: int  # all bundle files together
    unique_compressed: int  # distinct blobs together
    uncompressed: int  # distinct layers, uncompressed
    layers: int  # distinct layers
    gzip_layers: int

    def images(self, namespace: str) -> list[str]:
        return [b.name for b in self.bundles if b.namespace == namespace]


class _Blobs:
    """Distinct layer blobs, written once to a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.layers: dict[str, Layer] = {}
        self.uncompressed = 0

    def add(self, raw: bytes, compress: bool) -> Layer:
        data = gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw
        digest = _sha(data)
        if digest not in self.layers:
            path = self.folder / digest.split(":")[1]
            path.write_bytes(data)
            desc = {"mediaType": OCI_LAYER_GZIP if compress else OCI_LAYER, "digest": digest, "size": len(data)}
            self.layers[digest] = Layer(path, desc, _sha(raw))
            self.uncompressed += len(raw)
        return self.layers[digest]


def _write_bundle(path: Path, name: str, layers: list[Layer], entrypoint: list[str]) -> None:
    """An OCI archive of one image; layer blobs are streamed from their files."""
    arch = host().architecture
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _sha(config), "size": len(config)},
            "layers": [layer.desc for layer in layers],
        },
        sort_keys=True,
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": _sha(manifest),
                    "size": len(manifest),
                    "annotations": {"io.containerd.image.name": name},
                    "platform": {"architecture": arch, "os": "linux"},
                }
            ],
        },
        sort_keys=True,
    ).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(member: str, size: int, source: io.BufferedIOBase) -> None:
            info = tarfile.TarInfo(member)
            info.size = size
            info.mode = 0o644
            tar.addfile(info, source)

        layout = b'{"imageLayoutVersion":"1.0.0"}'
        add("oci-layout", len(layout), io.BytesIO(layout))
        add("index.json", len(index), io.BytesIO(index))
        for blob in (config, manifest):
            add(f"blobs/sha256/{_sha(blob)[7:]}", len(blob), io.BytesIO(blob))
        seen = set()
        for layer in layers:
            digest = str(layer.desc["digest"])
            if digest not in seen:
                seen.add(digest)
                with open(layer.path, "rb") as f:
                    add(f"blobs/sha256/{digest[7:]}", int(str(layer.desc["size"])), f)  # type: ignore[arg-type]
    os.replace(tmp, path)


def generate(workdir: Path, scale: float, seed: int, hello: bytes, pause: bytes) -> Generated:
    """Write the preseed folder under workdir, or reuse it when its parameters match."""
    key = hashlib.sha256(f"{FORMAT}:{scale}:{seed}:".encode() + _sha(hello).encode() + _sha(pause).encode())
    stamp = workdir / f"generated-{key.hexdigest()[:16]}.json"
    if stamp.exists():
        meta = json.loads(stamp.read_text())
        meta["preseed"] = Path(meta["preseed"])
        meta["bundles"] = [Bundle(b["namespace"], Path(b["path"]), b["name"]) for b in meta["bundles"]]
        return Generated(**meta)
    for old in [workdir / "preseed", workdir / "layers"]:
        shutil.rmtree(old, ignore_errors=True)
    preseed = workdir / "preseed"
    blobs = _Blobs(workdir / "layers")
    rng = random.Random(seed)
    corpus = _corpus(rng, 8 * MIB)

    def mib(n: int) -> int:
        return max(64 << 10, int(n * MIB * scale))

    base_os = blobs.add(_layer_tar(rng, corpus, mib(BASE_OS_MIB), "usr/lib/os"), compress=True)
    runtimes = [
        blobs.add(_layer_tar(rng, corpus, mib(RUNTIME_MIB), "usr/lib/runtime-a"), compress=True),
        blobs.add(_layer_tar(rng, corpus, mib(RUNTIME_MIB * 5 // 8), "usr/lib/runtime-b"), compress=False),
    ]
    entry = blobs.add(_file_tar("hello", hello, 0o755), compress=True)
    bundles: list[Bundle] = []
    for n in range(8):
        app = blobs.add(_layer_tar(rng, corpus, mib(APP_MIB), f"srv/app{n}"), compress=True)
        # Even images end with a small gzip layer, odd ones with an uncompressed one.
        extra = blobs.add(_layer_tar(rng, corpus, mib(EXTRA_MIB), f"etc/app{n}"), compress=n % 2 == 0)
        layers = [base_os, runtimes[n * 2 // 8], app, extra, entry]
        namespace = CRI_NAMESPACE if n < 6 else OTHER_NAMESPACE
        name = f"bench.invalid/app{n}:1"
        path = preseed / namespace / f"app{n}.tar"
        _write_bundle(path, name, layers, ["/hello"])
        bundles.append(Bundle(namespace, path, name))
    pause_layer = blobs.add(_file_tar("pause", pause, 0o755), compress=True)
    path = preseed / CRI_NAMESPACE / "pause.tar"
    _write_bundle(path, PAUSE, [pause_layer], ["/pause"])
    bundles.append(Bundle(CRI_NAMESPACE, path, PAUSE))
    generated = Generated(
        preseed=preseed,
        bundles=bundles,
        bundle_bytes=sum(b.path.stat().st_size for b in bundles),
        unique_compressed=sum(int(str(layer.desc["size"])) for layer in blobs.layers.values()),
        uncompressed=blobs.uncompressed,
        layers=len(blobs.layers),
        gzip_layers=sum(layer.desc["mediaType"] == OCI_LAYER_GZIP for layer in blobs.layers.values()),
    )
    meta = {**generated.__dict__, "preseed": str(preseed)}
    meta["bundles"] = [{"namespace": b.namespace, "path": str(b.path), "name": b.name} for b in bundles]
    stamp.write_text(json.dumps(meta))
    return generated


# Measuring


@dataclass
class Measured:
    seconds: float
    rss_mib: float
    cpu: float = 0.0  # CPU seconds of the command, user and system


# A small launcher forks the measured command, so that its peak RSS is not inflated by this
# (large) process's pages, which a direct fork would carry until exec.
_LAUNCHER = """
import os, sys, time
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
cpu = usage.ru_utime + usage.ru_stime
os.write(int(sys.argv[1]), f"{time.monotonic() - t0} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)} {cpu}".encode())
"""


def _timed(argv: list[str], env: dict[str, str] | None = None) -> Measured:
    """Wall time and peak RSS of a command (the launcher's own start-up is not counted)."""
    read_end, write_end = os.pipe()
    child = subprocess.Popen(
        ["python3", "-c", _LAUNCHER, str(write_end), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        pass_fds=(write_end,),
    )
    os.close(write_end)
    _, err = child.communicate()
    with os.fdopen(read_end, "rb") as f:
        seconds_text, rss_kib, code, cpu = f.read().decode().split()
    if int(code) != 0 or child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({code}):\n{err.decode()[-3000:]}")
    return Measured(float(seconds_text), int(rss_kib) / 1024, float(cpu))


def _cpu_of(pid: int | None) -> float:
    """CPU seconds (user and system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _base_config() -> dict[str, object]:
    """containerd's config for the bench, as a node's: CRI with the preseeded pause image."""
    return {
        "version": 2,
        "plugins": {
            "io.containerd.grpc.v1.cri": {
                "sandbox_image": PAUSE,
                "containerd": {"snapshotter": "overlayfs", "default_runtime_name": "runc"},
            }
        },
    }


@dataclass
class Run:
    """One tool's figures on one fresh containerd."""

    cold: Measured
    ready: float  # from the start of the cold run until CRI started a container of every image
    warm: Measured
    containerd_cpu: float  # CPU seconds containerd used during the cold run
    manifest_first: Measured | None = None  # the loader with --manifest: hashes every bundle
    manifest_second: Measured | None = None  # then again: accepts the recorded verification


def _start_everything(address: str, gen: Generated, log_dir: Path) -> float:
    """Start a container of every k8s.io application image through CRI; seconds it took.

    Afterwards (not timed) each must have printed Hello world and exited 0.
    """
    images = [name for name in gen.images(CRI_NAMESPACE) if name != PAUSE]
    log_dir.mkdir(parents=True, exist_ok=True)
    with Cri(address) as cri:
        t0 = time.monotonic()
        started = cri.start_in_one_pod(images, log_dir)
        seconds = time.monotonic() - t0
        for container in started:
            result = cri.wait_exit(container)
            if result.exit_code != 0 or stdout_lines(result.log) != ["Hello world"]:
                raise RuntimeError(f"{container.image} exited {result.exit_code}: {result.log!r}")
    return seconds


def _check_loaded(ctrd: Containerd, gen: Generated) -> None:
    reader = ctrd.state_reader()
    for namespace in (CRI_NAMESPACE, OTHER_NAMESPACE):
        names = sorted(n for n in reader.images(namespace) if n.startswith("bench.invalid/"))
        if names != sorted(gen.images(namespace)):
            raise RuntimeError(f"{namespace}: expected {sorted(gen.images(namespace))}, found {names}")


def _loader_cmd(address: str, preseed: Path, jobs: int | None, report: Path) -> list[str]:
    cmd = [sys.executable, "-m", "loader.main", "--address", address, "--preseed-dir", str(preseed)]
    cmd += ["--report", str(report)]
    return cmd + (["--jobs", str(jobs)] if jobs else [])


def _loader_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def _expect_report(report: Path, result: str, count: int, manifest: str | None = None) -> None:
    body = json.loads(report.read_text())
    summary = body["summary"]
    if summary.get(result) != count:
        raise RuntimeError(f"loader: expected {count} bundles {result}, got {summary}")
    checks = [b.get("manifest") for b in body["bundles"]]
    if checks != [manifest] * count:
        raise RuntimeError(f"loader: expected manifest={manifest} for every bundle, got {checks}")


def write_manifest(gen: Generated, path: Path) -> Path:
    """The node image's etc/preseed/manifest.json for the generated folder."""
    bundles = []
    for bundle in sorted(gen.bundles, key=lambda b: (b.namespace, b.path.name)):
        with open(bundle.path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        bundles.append(
            {
                "namespace": bundle.namespace,
                "path": f"{bundle.namespace}/{bundle.path.name}",
                "sha256": digest,
                "size": bundle.path.stat().st_size,
                "names": [bundle.name],
            }
        )
    body = {"version": 1, "preseed_dir": str(gen.preseed), "bundles": bundles}
    path.write_text(json.dumps(body, sort_keys=True, separators=(",", ":")))
    path.chmod(0o644)
    return path


def run_loader(gen: Generated, jobs: int | None, scratch: Path, manifest: Path) -> Run:
    with Containerd(base_config=_base_config()) as ctrd:
        report = scratch / "report.json"
        cmd = _loader_cmd(ctrd.address, gen.preseed, jobs, report)
        cpu0 = _cpu_of(ctrd.pid)
        t0 = time.monotonic()
        cold = _timed(cmd, _loader_env())
        cpu = _cpu_of(ctrd.pid) - cpu0
        ready = time.monotonic() - t0 + _start_everything(ctrd.address, gen, scratch / "logs-loader")
        _expect_report(report, "loaded", len(gen.bundles))
        _check_loaded(ctrd, gen)
        warm = _timed(cmd, _loader_env())
        _expect_report(report, "unchanged", len(gen.bundles))
        with_manifest = cmd + ["--manifest", str(manifest)]
        first = _timed(with_manifest, _loader_env())
        _expect_report(report, "unchanged", len(gen.bundles), "hashed")
        second = _timed(with_manifest, _loader_env())
        _expect_report(report, "unchanged", len(gen.bundles), "recorded")
    return Run(cold, ready, warm, cpu, first, second)


def _ctr_import(address: str, gen: Generated) -> Measured:
    t0 = time.monotonic()
    rss = cpu = 0.0
    for bundle in gen.bundles:
        m = _timed(["ctr", "-a", address, "-n", bundle.namespace, "images", "import", str(bundle.path)])
        rss = max(rss, m.rss_mib)
        cpu += m.cpu
    return Measured(time.monotonic() - t0, rss, cpu)


def run_ctr(gen: Generated, scratch: Path) -> Run:
    with Containerd(base_config=_base_config()) as ctrd:
        cpu0 = _cpu_of(ctrd.pid)
        t0 = time.monotonic()
        cold = _ctr_import(ctrd.address, gen)
        cpu = _cpu_of(ctrd.pid) - cpu0
        ready = time.monotonic() - t0 + _start_everything(ctrd.address, gen, scratch / "logs-ctr")
        _check_loaded(ctrd, gen)
        warm = _ctr_import(ctrd.address, gen)
    return Run(cold, ready, warm, cpu)


# Reporting


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


@dataclass
class Series:
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def cell(self, digits: int = 2) -> str:
        return f"{self.median:.{digits}f} ({min(self.values):.{digits}f}-{max(self.values):.{digits}f})"


def _series(runs: list[Run], get: Callable[[Run], float]) -> Series:
    return Series([get(r) for r in runs])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="size factor (1: about 1 GiB of bundles)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool, alternating (default 3)")
    parser.add_argument("--workdir", type=Path, help="where the preseed folder is generated (and reused)")
    parser.add_argument("--jobs", type=int, help="the loader's --jobs (default: its own default)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    hello = _runfile("e2e/hello_bin").read_bytes()
    pause = _runfile("e2e/pause_bin").read_bytes()
    with tempfile.TemporaryDirectory(prefix="preseed-bench-") as tmp:
        scratch = Path(tmp)
        workdir = args.workdir or scratch / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        gen = generate(workdir.resolve(), args.scale, args.seed, hello, pause)
        apps = len(gen.bundles) - 1
        print(
            f"preseed folder: {apps} application images + pause in {CRI_NAMESPACE} and {OTHER_NAMESPACE};"
            f" bundles {gen.bundle_bytes / MIB:.0f} MiB together, distinct layers {gen.layers}"
            f" ({gen.gzip_layers} gzip, {gen.layers - gen.gzip_layers} uncompressed),"
            f" {gen.unique_compressed / MIB:.0f} MiB as stored, {gen.uncompressed / MIB:.0f} MiB unpacked"
            f" (ready in {time.monotonic() - t0:.0f} s)",
            flush=True,
        )
        manifest = write_manifest(gen, scratch / "manifest.json")
        loader_runs: list[Run] = []
        ctr_runs: list[Run] = []
        loads = [_loadavg()]
        for i in range(args.repeat):
            order = ["loader", "ctr"] if i % 2 == 0 else ["ctr", "loader"]
            for tool in order:
                if tool == "loader":
                    run = run_loader(gen, args.jobs, scratch, manifest)
                    loader_runs.append(run)
                else:
                    run = run_ctr(gen, scratch)
                    ctr_runs.append(run)
                print(
                    f"  run {i + 1} {tool:<6} cold {run.cold.seconds:6.2f} s"
                    f" (CPU {run.cold.cpu:5.1f} s + containerd {run.containerd_cpu:5.1f} s)  ready {run.ready:6.2f} s"
                    f"  second {run.warm.seconds:6.2f} s  peak RSS {max(run.cold.rss_mib, run.warm.rss_mib):5.0f} MiB"
                    f"  (load {_loadavg()})",
                    flush=True,
                )
                if run.manifest_first and run.manifest_second:
                    print(
                        f"  run {i + 1} {tool:<6} --manifest: first check {run.manifest_first.seconds:6.2f} s"
                        f"  second {run.manifest_second.seconds:6.2f} s",
                        flush=True,
                    )
            loads.append(_loadavg())
    rows = [
        ("cold import", lambda r: r.cold.seconds),
        ("start to CRI running all", lambda r: r.ready),
        ("second run, nothing changed", lambda r: r.warm.seconds),
    ]
    print()
    print(f"{args.repeat} runs each, median (min-max), seconds; load average during: {', '.join(loads)}")
    print(f"{'phase':<30}{'loader':>22}{'ctr images import':>22}{'loader/ctr':>12}")
    ratios = []
    for label, get in rows:
        mine, theirs = _series(loader_runs, get), _series(ctr_runs, get)
        ratios.append(mine.median / theirs.median)
        print(f"{label:<30}{mine.cell():>22}{theirs.cell():>22}{ratios[-1]:>12.3f}")
    for label, get in [
        ("cold: CPU s, tool", lambda r: r.cold.cpu),
        ("cold: CPU s, containerd", lambda r: r.containerd_cpu),
    ]:
        mine, theirs = _series(loader_runs, get), _series(ctr_runs, get)
        print(f"{label:<30}{mine.cell(1):>22}{theirs.cell(1):>22}{mine.median / theirs.median:>12.3f}")
    for label, get in [
        ("--manifest, first check", lambda r: r.manifest_first.seconds if r.manifest_first else 0.0),
        ("second run, --manifest", lambda r: r.manifest_second.seconds if r.manifest_second else 0.0),
    ]:
        print(f"{label:<30}{_series(loader_runs, get).cell():>22}{'-':>22}")
    rss_loader = _series(loader_runs, lambda r: max(r.cold.rss_mib, r.warm.rss_mib))
    rss_ctr = _series(ctr_runs, lambda r: max(r.cold.rss_mib, r.warm.rss_mib))
    print(f"{'peak RSS, MiB':<30}{rss_loader.cell(0):>22}{rss_ctr.cell(0):>22}")
    print("targets: cold <= 0.6, second run <= 0.1, loader peak RSS <= 100 MiB")
    rss = max(rss_loader.values)
    print(f"cold_vs_ctr={ratios[0]:.2f} warm_vs_ctr={ratios[2]:.3f} loader_rss_mib={rss:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
