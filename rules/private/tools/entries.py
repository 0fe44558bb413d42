"""Spec entries: what the rules ask a tarball (a layer or a rootfs) to hold.

Each entry has exactly one of "src" (a file, or a directory added
recursively), "symlink" (the link target), "directory": true, or "tar" (a
tarball whose members are merged in; its "dest" must be "/"). "mode" (an
octal string) applies to files and directories; a file's default is 0755
if its src is executable, else 0644. "uid" and "gid" (numbers, default 0)
set the owner.
"""

from __future__ import annotations

import os
from typing import Any

from rules.private.tools import common, tarwriter

KINDS = ("src", "symlink", "directory", "tar")


def _id(entry: dict, key: str, where: str) -> int:
    value = entry.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{where}: {key!r} must be a non-negative integer")
    return value


def add_entry(writer: tarwriter.TarWriter, entry: Any, where: str) -> None:
    """Adds one spec entry to writer."""
    common.check_keys(entry, where, ("dest",), KINDS + ("mode", "uid", "gid"))
    kinds = [k for k in KINDS if k in entry]
    if len(kinds) != 1:
        raise ValueError(f"{where}: needs exactly one of "
                         + ", ".join(repr(k) for k in KINDS))
    dest = entry["dest"]
    if not isinstance(dest, str):
        raise ValueError(f"{where}: 'dest' must be a string")
    mode = common.parse_mode(entry["mode"], where) if "mode" in entry else None
    uid, gid = _id(entry, "uid", where), _id(entry, "gid", where)
    if "tar" in entry:
        if dest.strip("/"):
            raise ValueError(f"{where}: a tarball's 'dest' must be '/'")
        if mode is not None or "uid" in entry or "gid" in entry:
            raise ValueError(f"{where}: 'mode', 'uid' and 'gid' are not "
                             "allowed for a tarball")
        if not isinstance(entry["tar"], str):
            raise ValueError(f"{where}: 'tar' must be a string")
        writer.add_tar(entry["tar"])
        return
    dest = tarwriter.clean_name(dest)
    if "symlink" in entry:
        if mode is not None:
            raise ValueError(f"{where}: 'mode' is not allowed for a symlink")
        if not isinstance(entry["symlink"], str):
            raise ValueError(f"{where}: 'symlink' must be a string")
        writer.add_symlink(dest, entry["symlink"], uid, gid)
    elif "directory" in entry:
        if entry["directory"] is not True:
            raise ValueError(f"{where}: 'directory' must be true")
        writer.add_directory(dest, 0o755 if mode is None else mode, uid, gid)
    else:
        src = entry["src"]
        if not isinstance(src, str):
            raise ValueError(f"{where}: 'src' must be a string")
        if os.path.isdir(src):
            if mode is not None or "uid" in entry or "gid" in entry:
                raise ValueError(f"{where}: 'mode', 'uid' and 'gid' are not "
                                 f"allowed when src {src} is a directory")
            writer.add_tree(dest, src)
            return
        if mode is None:
            mode = 0o755 if os.stat(src).st_mode & 0o111 else 0o644
        writer.add_file(dest, src, mode, uid, gid)


def add_entries(writer: tarwriter.TarWriter, entries: Any,
                where: str) -> None:
    """Adds a list of entries; errors name the entry."""
    if not isinstance(entries, list):
        raise ValueError(f"{where} must be a list")
    for i, entry in enumerate(entries):
        here = f"{where}[{i}]"
        try:
            add_entry(writer, entry, here)
        except ValueError as e:
            if str(e).startswith(here):
                raise
            raise ValueError(f"{here}: {e}") from None
