"""Layer content shared by oci_layer and oci_image: files, directories and symlinks with modes and owners."""

LAYER_ATTRS = {
    "files": attr.label_keyed_string_dict(
        allow_files = True,
        doc = "Each target's single file (or directory, added recursively) and the absolute path it gets. Executables get mode 0755, other files 0644, unless `modes` says otherwise.",
    ),
    "executables": attr.string_list(doc = "Destinations in `files` that get mode 0755 even though their target is not executable."),
    "directories": attr.string_list(doc = "Absolute paths of empty directories to create (mode 0755 unless `modes` says otherwise)."),
    "symlinks": attr.string_dict(doc = "Symbolic links: absolute path of the link to its target, e.g. `{\"/bin/sh\": \"/bin/busybox\"}`."),
    "modes": attr.string_dict(doc = "Octal modes by destination, e.g. `{\"/etc/app.conf\": \"0600\"}`, for entries of `files` and `directories`."),
    "owners": attr.string_dict(doc = "Numeric owners by destination as `uid:gid`, e.g. `{\"/data\": \"65532:65532\"}`, for entries of `files`, `directories` and `symlinks`. Everything else belongs to 0:0."),
}

def _dest(attribute, path):
    if not path.startswith("/"):
        fail("%s: %r must be an absolute path" % (attribute, path))
    parts = [p for p in path.split("/") if p and p != "."]
    if not parts or ".." in parts:
        fail("%s: %r must name a path below / without '..'" % (attribute, path))
    return "/" + "/".join(parts)

def _owner(dest, value):
    parts = value.split(":")
    if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
        fail("owners: %r for %s must be numeric uid:gid" % (value, dest))
    return int(parts[0]), int(parts[1])

def _mode(dest, value):
    digits = value[1:] if len(value) == 4 and value.startswith("0") else value
    if len(digits) != 3 or [c for c in digits.elems() if c not in "01234567"]:
        fail("modes: %r for %s must be octal like \"0644\"" % (value, dest))
    return value

def _add(entries, dest, entry, what):
    if dest in entries:
        fail("%s: two entries have the destination %r" % (what, dest))
    entries[dest] = entry

def layer_entries(ctx):
    """Returns (spec entries, input files) for the layer attributes of ctx.attr."""
    entries = {}
    inputs = []
    executables = {_dest("executables", p): True for p in ctx.attr.executables}
    for target, path in ctx.attr.files.items():
        dest = _dest("files", path)
        target_files = target.files.to_list()
        if len(target_files) != 1:
            fail("files: %s must produce exactly one file, it produces %d" % (target.label, len(target_files)))
        src = target_files[0]
        entry = {"dest": dest, "src": src.path}
        if not src.is_directory:
            is_executable = target[DefaultInfo].files_to_run.executable != None
            entry["mode"] = "0755" if is_executable or dest in executables else "0644"
        _add(entries, dest, entry, "files")
        inputs.append(src)
    for dest in executables:
        if dest not in entries:
            fail("executables: %r is not a destination of files" % dest)
    for path in ctx.attr.directories:
        dest = _dest("directories", path)
        _add(entries, dest, {"dest": dest, "directory": True}, "directories")
    for path, target in ctx.attr.symlinks.items():
        if not target:
            fail("symlinks: %r has an empty target" % path)
        dest = _dest("symlinks", path)
        _add(entries, dest, {"dest": dest, "symlink": target}, "symlinks")
    for path, mode in ctx.attr.modes.items():
        dest = _dest("modes", path)
        entry = entries.get(dest)
        if entry == None or "symlink" in entry:
            fail("modes: %r is not a destination of files or directories" % path)
        if "src" in entry and entry["src"] and "mode" not in entry:
            fail("modes: %r is a directory tree; its modes come from its files" % path)
        entry["mode"] = _mode(dest, mode)
    for path, owner in ctx.attr.owners.items():
        dest = _dest("owners", path)
        entry = entries.get(dest)
        if entry == None:
            fail("owners: %r is not a destination of files, directories or symlinks" % path)
        if "src" in entry and "mode" not in entry:
            fail("owners: %r is a directory tree; it belongs to 0:0" % path)
        entry["uid"], entry["gid"] = _owner(dest, owner)
    return [entries[dest] for dest in sorted(entries)], inputs
