"""Writes a reproducible node rootfs tarball from a JSON spec.

Usage: rootfs.py --spec SPEC.json --output NODE.tar [--compression none|gzip]

Each spec entry has a "dest" and exactly one of "src" (a file, or a
directory added recursively), "symlink" (the link target) or
"directory": true. "mode" (an octal string) applies to files and
directories; a file's default is 0755 if its src is executable, else 0644.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Sequence

from rules.private.tools import common, tarwriter

_KINDS = ("src", "symlink", "directory")


def add_entry(writer: tarwriter.TarWriter, entry: Any, where: str) -> None:
    """Adds one spec entry to writer."""
    common.check_keys(entry, where, ("dest",), _KINDS + ("mode",))
    kinds = [k for k in _KINDS if k in entry]
    if len(kinds) != 1:
        raise ValueError(f"{where}: needs exactly one of 'src', 'symlink', "
                         "'directory'")
    dest = entry["dest"]
    if not isinstance(dest, str):
        raise ValueError(f"{where}: 'dest' must be a string")
    dest = tarwriter.clean_name(dest)
    mode = common.parse_mode(entry["mode"], where) if "mode" in entry else None
    if "symlink" in entry:
        if mode is not None:
            raise ValueError(f"{where}: 'mode' is not allowed for a symlink")
        if not isinstance(entry["symlink"], str):
            raise ValueError(f"{where}: 'symlink' must be a string")
        writer.add_symlink(dest, entry["symlink"])
    elif "directory" in entry:
        if entry["directory"] is not True:
            raise ValueError(f"{where}: 'directory' must be true")
        writer.add_directory(dest, 0o755 if mode is None else mode)
    else:
        src = entry["src"]
        if not isinstance(src, str):
            raise ValueError(f"{where}: 'src' must be a string")
        if os.path.isdir(src):
            if mode is not None:
                raise ValueError(f"{where}: 'mode' is not allowed when src "
                                 f"{src} is a directory")
            writer.add_tree(dest, src)
            return
        if mode is None:
            mode = 0o755 if os.stat(src).st_mode & 0o111 else 0o644
        writer.add_file(dest, src, mode)


def build_rootfs(spec: Any, output: str, compression: str = "none") -> None:
    common.check_keys(spec, "spec", ("entries",))
    entries = spec["entries"]
    if not isinstance(entries, list):
        raise ValueError("spec: 'entries' must be a list")
    writer = tarwriter.TarWriter(output, compression)
    for i, entry in enumerate(entries):
        try:
            add_entry(writer, entry, f"spec: entries[{i}]")
        except ValueError as e:
            if str(e).startswith("spec:"):
                raise
            raise ValueError(f"spec: entries[{i}]: {e}") from None
    writer.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="rootfs", description="Write a reproducible rootfs tarball.")
    parser.add_argument("--spec", required=True, help="rootfs spec JSON file")
    parser.add_argument("--output", required=True, help="tarball to write")
    parser.add_argument("--compression", choices=("none", "gzip"),
                        default="none")
    args = parser.parse_args(argv)
    build_rootfs(common.load_json(args.spec), args.output, args.compression)


if __name__ == "__main__":
    common.run("rootfs", main)
