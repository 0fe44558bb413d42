"""Build benchmark: clean and incremental build times of a node image, and bundle packaging speed.

Runs outside Bazel (it drives Bazel itself):

    python3 bench/build_bench.py [--target //e2e:node_image] [--go-source e2e/hello/main.go]
                                 [--bundle-mib 512] [--repeat 3]

1. Copies the tracked sources into a temp folder and, with a private output base, builds the
   target once (this fetches the external repositories), runs `bazel clean`, and times a clean
   build; then changes the Go source's greeting and times the incremental rebuild, listing the
   action mnemonics that ran.
2. Packs an OCI layout holding one incompressible layer of --bundle-mib MiB into a bundle with
   the rules' bundle tool (the py_binary the build's actions run, built in that same copy), and
   the same folder with plain `tar`, --repeat times each, alternating; prints medians with
   min-max and the ratio (target: at most 1.5x tar's time).
Last line: `clean_build_s=S incremental_build_s=S bundle_vs_tar=R`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent


def tracked_copy(dest: pathlib.Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        if not name:
            continue
        src = REPO / name
        if not src.exists():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def bazel(workspace: pathlib.Path, output_base: pathlib.Path, *args: str) -> float:
    start = time.monotonic()
    subprocess.run(
        ["bazel", f"--output_base={output_base}", *args],
        cwd=workspace,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.monotonic() - start


def mnemonics(execution_log: pathlib.Path) -> dict[str, int]:
    """Counts the spawned actions of a build by mnemonic, from --execution_log_json_file."""
    counts: dict[str, int] = {}
    decoder = json.JSONDecoder()
    text = execution_log.read_text()
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            break
        entry, position = decoder.raw_decode(text, position)
        name = entry.get("mnemonic", "?")
        counts[name] = counts.get(name, 0) + 1
    return counts


def build_times(
    workspace: pathlib.Path, output_base: pathlib.Path, target: str, go_source: str
) -> tuple[float, float, dict[str, int]]:
    bazel(workspace, output_base, "build", target)
    bazel(workspace, output_base, "clean")
    clean = bazel(workspace, output_base, "build", target)
    source = workspace / go_source
    text = source.read_text()
    # The first string literal passed to a call (`name("...`), not an import path.
    changed = re.sub(r'(\w)\(\s*"([^"]*)"', lambda m: m.group(1) + '("' + m.group(2) + '!"', text, count=1)
    if changed == text:
        raise SystemExit(f"build_bench: {go_source}: no string literal to change")
    source.write_text(changed)
    log = output_base.parent / "exec.json"
    incremental = bazel(workspace, output_base, "build", f"--execution_log_json_file={log}", target)
    return clean, incremental, mnemonics(log)


def write_layout(layout: pathlib.Path, mib: int) -> None:
    """An OCI layout with one incompressible layer of `mib` MiB (its content is not checked here)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes | None, path: pathlib.Path | None = None) -> dict:
        if data is not None:
            digest = hashlib.sha256(data).hexdigest()
            (blobs / digest).write_bytes(data)
            return {"digest": "sha256:" + digest, "size": len(data)}
        assert path is not None
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        size = path.stat().st_size
        path.rename(blobs / sha.hexdigest())
        return {"digest": "sha256:" + sha.hexdigest(), "size": size}

    raw = layout / "layer.tmp"
    with open(raw, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    layer = dict(put(None, raw), mediaType="application/vnd.oci.image.layer.v1.tar+gzip")
    config = dict(put(json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]},
    }).encode()), mediaType="application/vnd.oci.image.config.v1+json")
    manifest = dict(put(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": [layer],
    }).encode()), mediaType="application/vnd.oci.image.manifest.v1+json")
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')


def packaging(tool: pathlib.Path, mib: int, repeat: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory(prefix="preseed-bundle-bench-") as scratch:
        root = pathlib.Path(scratch)
        layout = root / "layout"
        write_layout(layout, mib)
        ours, tar = [], []
        for _ in range(repeat):
            start = time.monotonic()
            subprocess.run([str(tool), "--layout", str(layout), "--name", "bench/image:1",
                            "--output", str(root / "bundle.tar")], check=True)
            ours.append(time.monotonic() - start)
            start = time.monotonic()
            subprocess.run(["tar", "-cf", str(root / "plain.tar"), "-C", str(layout), "."], check=True)
            tar.append(time.monotonic() - start)
            (root / "bundle.tar").unlink()
            (root / "plain.tar").unlink()
    return ours, tar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="//e2e:node_image")
    parser.add_argument("--go-source", default="e2e/hello/main.go")
    parser.add_argument("--bundle-mib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="preseed-build-bench-") as scratch:
        root = pathlib.Path(scratch)
        workspace, output_base = root / "src", root / "out"
        tracked_copy(workspace)
        try:
            clean, incremental, ran = build_times(workspace, output_base, args.target, args.go_source)
            bazel(workspace, output_base, "build", "//rules/private/tools:bundle")
            ours, tar = packaging(workspace / "bazel-bin/rules/private/tools/bundle", args.bundle_mib, args.repeat)
        finally:
            subprocess.run(["bazel", f"--output_base={output_base}", "shutdown"], cwd=workspace,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.run(["chmod", "-R", "u+w", str(output_base)], stderr=subprocess.DEVNULL)
    print(f"target {args.target}")
    print(f"  clean build (external repositories cached): {clean:7.2f} s")
    print(f"  rebuild after changing {args.go_source}:    {incremental:7.2f} s")
    print("  actions run by the rebuild: " + ", ".join(f"{k} x{v}" for k, v in sorted(ran.items())))

    ratio = statistics.median(ours) / statistics.median(tar)
    print(f"bundle packaging of {args.bundle_mib} MiB, {args.repeat} runs each")
    print(f"  bundle tool: median {statistics.median(ours):6.2f} s ({args.bundle_mib / statistics.median(ours):7.1f} MiB/s), "
          f"min {min(ours):.2f} s, max {max(ours):.2f} s")
    print(f"  plain tar:   median {statistics.median(tar):6.2f} s ({args.bundle_mib / statistics.median(tar):7.1f} MiB/s), "
          f"min {min(tar):.2f} s, max {max(tar):.2f} s")
    print(f"clean_build_s={clean:.2f} incremental_build_s={incremental:.2f} bundle_vs_tar={ratio:.2f}")


if __name__ == "__main__":
    main()
