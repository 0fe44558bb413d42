"""Command line: import every preseeded bundle into containerd."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn, Sequence

if __package__ in (None, ""):
    # Run as a script (loader/main.py): import the package from the repo root.
    _root = str(Path(__file__).resolve().parent.parent)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(_root, "loader")]
    sys.path.insert(0, _root)

from loader import log, trust  # noqa: E402
from loader.discover import BundleFile, Skipped, find_bundles  # noqa: E402
from loader.errors import UsageError  # noqa: E402
from loader.importer import Options  # noqa: E402
from loader.run import (  # noqa: E402
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Report,
    Settings,
    run,
    skipped_entry,
)

DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
DEFAULT_PRESEED_DIR = "/containerd/preseed"
DEFAULT_SNAPSHOTTER = "overlayfs"
DEFAULT_TIMEOUT = 60.0

DESCRIPTION = """\
Import every preseeded bundle into containerd: <preseed dir>/<namespace>/<file>, where file is
an OCI archive or a docker archive (.tar), or one compressed as a whole (.tar.gz, .tgz,
.tar.zst, .tzst). Layers may be gzip, zstd or uncompressed. Each bundle's content goes in
under a lease, is verified against its digests, is unpacked into the snapshotter, and only
then are its image records written. Bundles run in parallel; one line per bundle is logged
in file order."""

EPILOG = """\
names:
  io.containerd.image.name, else org.opencontainers.image.ref.name (a full reference, or a
  bare tag T made full with the bundle's file name: redis.tar + 7.2 ->
  docker.io/library/redis:7.2), else the docker archive's RepoTags (short names made full
  as Docker does). An image with no name is imported as <file name>@<digest>, with a warning.

labels on every image record the loader writes:
  preseed.dev/bundle=<file>           the bundle it came from (used by --prune)
  preseed.dev/fingerprint, preseed.dev/images, preseed.dev/unpacked
                                      what the second-boot check compares
  preseed.dev/verified=<sha256>:<dev>:<ino>:<size>:<mtime_ns>:<ctime_ns>
                                      with --manifest: the bundle matched the manifest's
                                      sha256 when it had this stat
  io.cri-containerd.pinned=pinned     in namespace k8s.io only, unless --no-pin

second boot:
  a bundle whose fingerprint (size, mtime, digest of its index) matches its image records,
  and whose content, GC labels and top snapshot are all still in containerd, is not read
  again ("unchanged"); anything missing makes it load again. With --manifest, such a bundle
  is not hashed either when its records carry preseed.dev/verified for the manifest's sha256
  and the file's current stat (manifest=recorded); otherwise it is hashed (manifest=hashed).

exit codes:
  0  every bundle loaded (or verified, with --dry-run)
  1  some bundles failed (every other one loaded), or pruning failed
  2  bad usage, unreadable preseed folder, or containerd unreachable within --timeout"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="preseed-loader",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help=f"containerd gRPC socket (default {DEFAULT_ADDRESS})")
    parser.add_argument(
        "--preseed-dir",
        default=DEFAULT_PRESEED_DIR,
        type=Path,
        help="directory holding <namespace>/<file> bundles (default %(default)s)",
    )
    parser.add_argument(
        "--snapshotter",
        default=DEFAULT_SNAPSHOTTER,
        help="snapshotter to unpack layers into (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        default=DEFAULT_TIMEOUT,
        type=float,
        help="seconds to wait for containerd's socket, with backoff (default %(default)g)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="bundles, and layers, handled at once (default: CPU count, %(default)s)",
    )
    parser.add_argument(
        "--all-platforms",
        action="store_true",
        help="import the content of every platform present (the host's is unpacked)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not label k8s.io images io.cri-containerd.pinned=pinned",
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="remove images labelled preseed.dev/bundle whose bundle is gone or no longer"
        " holds them; nothing else is touched",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="read and verify every bundle without containerd",
    )
    parser.add_argument("--report", type=Path, help="write a JSON summary of the run to FILE")
    parser.add_argument(
        trust.ALLOW_FLAG,
        action="store_true",
        help="load bundles and folders that are not owned by root or are writable by group or"
        " others (with a warning); for development only",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE",
        help="the node image's manifest (etc/preseed/manifest.json): load only bundles whose"
        " size and sha256 it lists; any other, changed or missing bundle is tampering. A bundle"
        " verified by an earlier run and unchanged since is not hashed again",
    )
    parser.add_argument(
        "--log-format",
        choices=log.FORMATS,
        default="text",
        help="text (logfmt) or json (one object per line); default %(default)s",
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
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the loader; returns the process exit code."""
    if argv is None:
        argv = sys.argv[1:]
    if "--log-format=json" in argv or any(
        a == "--log-format" and i + 1 < len(argv) and argv[i + 1] == "json"
        for i, a in enumerate(argv)
    ):
        log.set_format("json")
    else:
        log.set_format("text")
    try:
        args = _parse(argv)
    except UsageError as e:
        log.error("bad usage", error=str(e))
        return EXIT_USAGE
    preseed_dir: Path = args.preseed_dir
    settings = Settings(
        address=args.address,
        preseed_dir=preseed_dir,
        options=Options(
            snapshotter=args.snapshotter,
            all_platforms=args.all_platforms,
            pin=not args.no_pin,
        ),
        jobs=args.jobs,
        timeout=args.timeout,
        dry_run=args.dry_run,
        prune=args.prune,
    )
    manifest: trust.Manifest | None = None
    if args.manifest is not None:
        try:
            manifest, warnings = trust.read_manifest(args.manifest, args.allow_insecure_permissions)
        except UsageError as e:
            log.error("bad manifest", file=str(args.manifest), error=str(e))
            return _finish(args, Report(str(preseed_dir), args.dry_run, EXIT_USAGE, error=str(e)))
        for warning in warnings:
            log.warning("insecure", file=str(args.manifest), warning=warning)
    if not preseed_dir.exists():
        # Nothing is pruned either: a missing folder is more likely a mistake than an upgrade.
        log.warning("no preseed directory; nothing to load", dir=str(preseed_dir))
        bundles, skipped = [], []
    else:
        try:
            bundles, skipped = find_bundles(preseed_dir)
        except OSError as e:
            log.error(
                "cannot read preseed directory", dir=str(preseed_dir), error=e.strerror or str(e)
            )
            return _finish(args, Report(str(preseed_dir), args.dry_run, EXIT_USAGE, error=str(e)))
    if preseed_dir.exists() or manifest is not None:
        bundles, skipped = _vet(args, preseed_dir, bundles, skipped, manifest)
    for entry in skipped:
        if entry.refused:
            log.error("refused", file=str(entry.path), reason=entry.reason)
        else:
            log.warning("skipped", path=str(entry.path), reason=entry.reason)
    if not bundles and (not args.prune or not preseed_dir.exists()):
        log.info("nothing to load", dir=str(preseed_dir))
        report = Report(str(preseed_dir), args.dry_run)
        report.skipped = [skipped_entry(s) for s in skipped]
        if any(s.refused for s in skipped):
            report.exit_code = EXIT_FAILED
        return _finish(args, report)
    return _finish(args, run(settings, bundles, skipped))


def _vet(
    args: argparse.Namespace,
    preseed_dir: Path,
    bundles: list[BundleFile],
    skipped: list[Skipped],
    manifest: trust.Manifest | None,
) -> tuple[list[BundleFile], list[Skipped]]:
    """Keep the bundles that pass the trust checks; the others join skipped as refused."""
    vetted = trust.vet(preseed_dir, bundles, args.allow_insecure_permissions, manifest)
    for path, warning in vetted.warnings:
        log.warning("insecure", file=str(path), warning=warning)
    return vetted.bundles, skipped + vetted.refused


def _finish(args: argparse.Namespace, report: Report) -> int:
    if args.report is not None:
        try:
            report.write(args.report)
        except OSError as e:
            log.error("cannot write report", file=str(args.report), error=e.strerror or str(e))
            return report.exit_code or EXIT_USAGE
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
