"""Benchmark: the loader beside `ctr images import` on the same bundles, fresh containerd each time.

    bazel run //bench:loader_bench -- [--scale 1] [--workdir DIR]

Generates N bundles (default 4 images, each 4 gzip layers of realistic data, about 64 MiB
compressed at scale 1), then measures on a fresh private containerd each time: a cold import
by the loader and by `ctr images import` (which unpacks), a second run of each with nothing
changed, and the loader's peak RSS. Prints a table and, last, the line
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
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loader.platforms import host  # noqa: E402
from testutil.containerd import Containerd  # noqa: E402
from testutil.oci_archive import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST  # noqa: E402
from testutil.oci_archive import write_layout  # noqa: E402

NS = "k8s.io"
MIB = 1 << 20


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


def _layer(rng: random.Random, corpus: bytes, raw_size: int) -> bytes:
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
            info = tarfile.TarInfo(f"usr/share/bench/{i:05d}.bin")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
            total += len(data)
            i += 1
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Generated:
    paths: list[Path]
    compressed: int
    uncompressed: int


def generate(out: Path, images: int, layers: int, layer_raw: int, seed: int) -> Generated:
    """Write the bundles (cached in out by their parameters)."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / f"bundles-{images}x{layers}x{layer_raw}-{seed}.json"
    if stamp.exists():
        meta = json.loads(stamp.read_text())
        return Generated([Path(p) for p in meta["paths"]], meta["compressed"], meta["uncompressed"])
    rng = random.Random(seed)
    corpus = _corpus(rng, 8 * MIB)
    paths, compressed, uncompressed = [], 0, 0
    for n in range(images):
        blobs: dict[str, bytes] = {}
        descs, diff_ids = [], []
        for _ in range(layers):
            raw = _layer(rng, corpus, layer_raw)
            gz = gzip.compress(raw, compresslevel=6, mtime=0)
            diff_ids.append(_sha(raw))
            blobs[_sha(gz)] = gz
            descs.append({"mediaType": OCI_LAYER_GZIP, "digest": _sha(gz), "size": len(gz)})
            compressed += len(gz)
            uncompressed += len(raw)
        config = json.dumps(
            {"architecture": host().architecture, "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        ).encode()
        blobs[_sha(config)] = config
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": _sha(config), "size": len(config)},
                "layers": descs,
            }
        ).encode()
        blobs[_sha(manifest)] = manifest
        name = f"bench.invalid/app{n}:1"
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": _sha(manifest),
                    "size": len(manifest),
                    "annotations": {"io.containerd.image.name": name},
                    "platform": {"architecture": host().architecture, "os": "linux"},
                }
            ],
        }
        path = out / NS / f"app{n}.tar"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_layout(path, index, blobs)
        paths.append(path)
    stamp.write_text(
        json.dumps({"paths": [str(p) for p in paths], "compressed": compressed, "uncompressed": uncompressed})
    )
    return Generated(paths, compressed, uncompressed)


@dataclass
class Measured:
    seconds: float
    rss_mib: float


# A small launcher forks the measured command, so that its peak RSS is not inflated by this
# (large) process's pages, which a direct fork would carry until exec.
_LAUNCHER = """
import os, sys, time
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
os.write(int(sys.argv[1]), f"{time.monotonic() - t0} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}".encode())
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
        seconds_text, rss_kib, code = f.read().decode().split()
    if int(code) != 0 or child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({code}):\n{err.decode()[-3000:]}")
    return Measured(float(seconds_text), int(rss_kib) / 1024)


def _loader_cmd(address: str, preseed: Path, jobs: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "loader.main", "--address", address, "--preseed-dir", str(preseed)]
    return cmd + (["--jobs", str(jobs)] if jobs else [])


def _loader_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def _ctr_import(address: str, paths: list[Path]) -> Measured:
    t0 = time.monotonic()
    rss = 0.0
    for path in paths:
        m = _timed(["ctr", "-a", address, "-n", NS, "images", "import", str(path)])
        rss = max(rss, m.rss_mib)
    return Measured(time.monotonic() - t0, rss)


def _check_loaded(ctrd: Containerd, count: int) -> None:
    names = [n for n in ctrd.state_reader().images(NS) if n.startswith("bench.invalid/")]
    if len(names) != count:
        raise RuntimeError(f"expected {count} images, found {names}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="bundle size factor (1 = 64 MiB compressed each)")
    parser.add_argument("--images", type=int, default=4, help="bundles, one image each")
    parser.add_argument("--layers", type=int, default=4, help="gzip layers per image")
    parser.add_argument("--workdir", type=Path, help="where bundles are generated (and reused)")
    parser.add_argument("--jobs", type=int, help="the loader's --jobs (default: its own default)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    layer_raw = max(64 << 10, int(32 * MIB * args.scale))
    with tempfile.TemporaryDirectory(prefix="preseed-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        t0 = time.monotonic()
        gen = generate(workdir / "preseed", args.images, args.layers, layer_raw, args.seed)
        print(
            f"bundles: {args.images} x {args.layers} gzip layers;"
            f" {gen.compressed / args.images / MIB:.1f} MiB compressed,"
            f" {gen.uncompressed / args.images / MIB:.1f} MiB uncompressed each"
            f" (ready in {time.monotonic() - t0:.1f}s)",
            flush=True,
        )
        preseed = gen.paths[0].parent.parent
        with Containerd() as ctrd:
            ctr_cold = _ctr_import(ctrd.address, gen.paths)
            _check_loaded(ctrd, args.images)
            ctr_warm = _ctr_import(ctrd.address, gen.paths)
        with Containerd() as ctrd:
            cmd = _loader_cmd(ctrd.address, preseed, args.jobs)
            loader_cold = _timed(cmd, _loader_env())
            _check_loaded(ctrd, args.images)
            loader_warm = _timed(cmd, _loader_env())
    cold = loader_cold.seconds / ctr_cold.seconds
    warm = loader_warm.seconds / ctr_warm.seconds
    rss = max(loader_cold.rss_mib, loader_warm.rss_mib)
    rows = [
        ("cold import", loader_cold, ctr_cold),
        ("second run, nothing changed", loader_warm, ctr_warm),
    ]
    print(f"{'phase':<30}{'loader s':>10}{'ctr s':>10}{'ratio':>8}{'loader RSS MiB':>16}")
    for label, mine, theirs in rows:
        print(
            f"{label:<30}{mine.seconds:>10.2f}{theirs.seconds:>10.2f}"
            f"{mine.seconds / theirs.seconds:>8.2f}{mine.rss_mib:>16.1f}"
        )
    print("targets: cold <= 0.6, second run <= 0.1, loader peak RSS <= 100 MiB")
    print(f"cold_vs_ctr={cold:.2f} warm_vs_ctr={warm:.3f} loader_rss_mib={rss:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
