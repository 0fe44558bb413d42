"""Boots the end-to-end node image in a temp folder and runs its hello world through CRI.

Unpacks the node image, starts containerd from the node image's config (private root, state and
socket), runs the node image's own loader on its preseed folder, runs the preseeded hello world
image in a host-network pod through CRI, prints what it wrote, and stops everything again.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

from e2e.node import Cri, NodeRoot, stdout_lines
from testutil.containerd import Containerd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--node-image", type=pathlib.Path, default=pathlib.Path(__file__).parent / "node_image.tar")
    parser.add_argument("--image", default="e2e.invalid/hello:latest", help="the preseeded image to run")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="preseed-boot-") as scratch:
        work = pathlib.Path(scratch)
        print(f"node image: {args.node_image} ({args.node_image.stat().st_size} bytes)")
        node = NodeRoot.unpack(args.node_image, work / "rootfs")
        bundles = sorted(str(p.relative_to(node.preseed_dir)) for p in node.preseed_dir.glob("*/*"))
        print(f"preseeded bundles: {', '.join(bundles)}")
        with Containerd(base_config=node.containerd_config()) as containerd:
            print(f"containerd started from the node image's config, socket {containerd.address}")
            loaded = node.run_loader(containerd.address)
            sys.stdout.write(loaded.stdout + loaded.stderr)
            if loaded.returncode != 0:
                print(f"loader failed with exit code {loaded.returncode}")
                return 1
            with Cri(containerd.address) as cri:
                image = cri.image_status(args.image)
                if image is None:
                    print(f"CRI does not see {args.image}")
                    return 1
                print(f"CRI sees {args.image} ({image.id}), running it in a host-network pod")
                log_dir = work / "pod-logs"
                log_dir.mkdir()
                result = cri.run_to_exit(args.image, log_dir)
            print(f"container exited with code {result.exit_code}; its stdout:")
            for line in stdout_lines(result.log):
                print("  " + line)
        return 0 if result.exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
