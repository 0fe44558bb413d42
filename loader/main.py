"""Command line: import every preseeded bundle into containerd."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NoReturn, Sequence

if __package__ in (None, ""):
    # Run as a script (loader/main.py): import the package from the repo root.
    _root = str(Path(__file__).resolve().parent.parent)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(_root, "loader")]
    sys.path.insert(0, _root)

from loader import log  # noqa: E402
from loader.client import Client  # noqa: E402
from loader.discover import BundleFile, find_bundles  # noqa: E402
from loader.errors import ContainerdError, LoaderError, UsageError  # noqa: E402
from loader.importer import Importer, ImportStats  # noqa: E402

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
DEFAULT_PRESEED_DIR = "/containerd/preseed"
DEFAULT_SNAPSHOTTER = "overlayfs"
DEFAULT_TIMEOUT = 60.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="preseed-loader",
        description="Import preseeded OCI archive bundles into containerd.",
    )
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help="containerd gRPC socket")
    parser.add_argument(
        "--preseed-dir",
        default=DEFAULT_PRESEED_DIR,
        type=Path,
        help="directory holding <namespace>/<name>.tar bundles",
    )
    parser.add_argument(
        "--snapshotter", default=DEFAULT_SNAPSHOTTER, help="snapshotter to unpack layers into"
    )
    parser.add_argument(
        "--timeout",
        default=DEFAULT_TIMEOUT,
        type=float,
        help="seconds to wait for containerd to answer",
    )
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if not args.address:
        raise UsageError("--address must not be empty")
    if not args.snapshotter:
        raise UsageError("--snapshotter must not be empty")
    if not args.timeout >= 0:
        raise UsageError("--timeout must be zero or more seconds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the loader; returns the process exit code."""
    try:
        args = _parse(argv)
    except UsageError as e:
        log.error("bad usage", error=str(e))
        return EXIT_USAGE
    preseed_dir: Path = args.preseed_dir
    if not preseed_dir.exists():
        log.warning("no preseed directory; nothing to load", dir=str(preseed_dir))
        return EXIT_OK
    try:
        bundles, skipped = find_bundles(preseed_dir)
    except OSError as e:
        log.error("cannot read preseed directory", dir=str(preseed_dir), error=e.strerror or str(e))
        return EXIT_USAGE
    for entry in skipped:
        log.warning("skipped", path=str(entry.path), reason=entry.reason)
    if not bundles:
        log.info("nothing to load", dir=str(preseed_dir))
        return EXIT_OK
    return _run(args, bundles)


def _run(args: argparse.Namespace, bundles: list[BundleFile]) -> int:
    started = time.monotonic()
    client = Client(args.address)
    try:
        try:
            client.wait_ready(args.timeout)
        except ContainerdError as e:
            log.error("containerd unreachable", address=args.address, error=str(e))
            return EXIT_USAGE
        importer = Importer(client, args.snapshotter)
        failed = 0
        for bundle in bundles:
            stats = ImportStats()
            t0 = time.monotonic()
            error: str | None = None
            try:
                importer.import_bundle(bundle.namespace, bundle.path, stats)
            except LoaderError as e:
                error = str(e)
            except Exception as e:  # keep going with the other bundles
                error = f"internal error: {type(e).__name__}: {e}"
            for warning in stats.warnings:
                log.warning(
                    "bundle warning",
                    namespace=bundle.namespace,
                    file=str(bundle.path),
                    warning=warning,
                )
            fields: dict[str, log.Value] = dict(
                namespace=bundle.namespace,
                file=str(bundle.path),
                names=stats.names,
                bytes=stats.bytes_written,
                seconds=time.monotonic() - t0,
                result="failed" if error else "ok",
                blobs_written=stats.blobs_written,
                blobs_present=stats.blobs_present,
                layers_unpacked=stats.layers_unpacked,
                layers_present=stats.layers_present,
                images_changed=stats.images_changed,
            )
            if error:
                failed += 1
                log.error("bundle", **fields, error=error)
            else:
                log.info("bundle", **fields)
        log.info(
            "done",
            bundles=len(bundles),
            loaded=len(bundles) - failed,
            failed=failed,
            seconds=time.monotonic() - started,
        )
        return EXIT_FAILED if failed else EXIT_OK
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
