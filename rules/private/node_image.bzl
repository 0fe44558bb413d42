"""node_image: a rootfs tarball with preseed bundles, the loader, its systemd unit and containerd's config."""

load(":bundle.bzl", "validate_namespace")
load(":providers.bzl", "PreseedBundleInfo")

_LOADER_LIB = "usr/lib/preseed-loader"
_LOADER_BIN = "usr/bin/preseed-loader"
_UNIT = "etc/systemd/system/preseed-loader.service"
MANIFEST = "etc/preseed/manifest.json"

_LAUNCHER = """#!/bin/sh
# Runs the preseed loader installed beside this script (see {unit}).
lib="$(CDPATH= cd -- "$(dirname -- "$0")/../lib/preseed-loader" && pwd -P)"
PYTHONPATH="{pythonpath}" exec python3 -s -B -P -m loader.main "$@"
"""

_SERVICE = """[Unit]
Description=Import preseeded container images into containerd
After=containerd.service
Requires=containerd.service
Before=kubelet.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/{bin} --address {address} --preseed-dir {preseed_dir}{args}

[Install]
WantedBy=multi-user.target kubelet.service
"""

def _runfiles_path(workspace_name, short_path):
    """The path of a runfile below the runfiles root: `<repository>/<path>`."""
    if short_path.startswith("../"):
        return short_path[len("../"):]
    return workspace_name + "/" + short_path

def _add(entries, entry):
    dest = entry["dest"]
    if dest in entries:
        fail("two entries of the node image have the path /%s: %s and %s" % (dest, _source(entries[dest]), _source(entry)))
    entries[dest] = entry

def _source(entry):
    return entry.get("src") or ("a symlink to " + entry.get("symlink", "?"))

def _node_image_impl(ctx):
    preseed_dir = ctx.attr.preseed_dir.strip("/")
    if not preseed_dir or ".." in preseed_dir.split("/"):
        fail("preseed_dir %r must be an absolute path without '..'" % ctx.attr.preseed_dir)
    entries = {}
    inputs = []

    entries[MANIFEST] = {"dest": MANIFEST, "src": "the bundle manifest", "bundle": True}
    bundles = []
    for target in ctx.attr.bundles:
        info = target[PreseedBundleInfo]
        error = validate_namespace(info.namespace)
        if error:
            fail("bundles: %s: %s" % (target.label, error))
        dest = "%s/%s/%s" % (preseed_dir, info.namespace, info.path)
        if dest in entries:
            fail("bundles: %s and %s both go to /%s; give them different names or namespaces" % (_source(entries[dest]), target.label, dest))
        entries[dest] = {"dest": dest, "src": str(target.label), "bundle": True}
        bundles.append({"namespace": info.namespace, "path": info.path, "src": info.bundle.path, "metadata": info.metadata.path})
        inputs.extend([info.bundle, info.metadata])

    for target, path in ctx.attr.files.items():
        files = target.files.to_list()
        if len(files) != 1:
            fail("files: %s must produce exactly one file, it produces %d" % (target.label, len(files)))
        dest = path.strip("/")
        if not path.startswith("/") or not dest or ".." in dest.split("/"):
            fail("files: %r of %s must be an absolute path without '..'" % (path, target.label))
        _add(entries, {"dest": dest, "src": files[0].path})
        inputs.append(files[0])

    loader = ctx.attr.loader
    executable = loader[DefaultInfo].files_to_run.executable
    runfiles = loader[DefaultInfo].default_runfiles.files.to_list()
    for f in runfiles:
        # The py_binary's own launcher and Bazel's interpreter wrapper stay behind.
        if f == executable or f.owner.workspace_name == "bazel_tools":
            continue
        _add(entries, {"dest": _LOADER_LIB + "/" + _runfiles_path(ctx.workspace_name, f.short_path), "src": f.path, "mode": "0644"})
        inputs.append(f)
    imports = [ctx.workspace_name] + sorted(loader[PyInfo].imports.to_list())
    launcher = ctx.actions.declare_file(ctx.label.name + ".launcher.sh")
    ctx.actions.write(launcher, _LAUNCHER.format(
        unit = _UNIT,
        pythonpath = ":".join(["$lib/" + path for path in imports]),
    ))
    _add(entries, {"dest": _LOADER_BIN, "src": launcher.path, "mode": "0755"})
    inputs.append(launcher)

    args = (["--manifest", "/" + MANIFEST] if ctx.attr.verify_manifest else []) + ctx.attr.loader_args
    for arg in args:
        if not arg or " " in arg or "\t" in arg or "\n" in arg or "%" in arg or "$" in arg:
            fail("loader_args: %r cannot be passed through a systemd ExecStart line" % arg)
    unit = ctx.actions.declare_file(ctx.label.name + ".preseed-loader.service")
    ctx.actions.write(unit, _SERVICE.format(
        bin = _LOADER_BIN,
        address = ctx.attr.containerd_address,
        preseed_dir = "/" + preseed_dir,
        args = "".join([" " + arg for arg in args]),
    ))
    _add(entries, {"dest": _UNIT, "src": unit.path, "mode": "0644"})
    for wants in ["multi-user.target.wants", "kubelet.service.wants"]:
        _add(entries, {"dest": "etc/systemd/system/%s/preseed-loader.service" % wants, "symlink": "../preseed-loader.service"})
    inputs.append(unit)

    config = ctx.file.containerd_config
    _add(entries, {"dest": "etc/containerd/config.toml", "src": config.path, "mode": "0644"})
    inputs.append(config)

    spec = ctx.actions.declare_file(ctx.label.name + ".spec.json")
    listed = [entries[dest] for dest in sorted(entries) if not entries[dest].get("bundle")]
    tars = [{"dest": "/", "tar": f.path} for f in ctx.files.tars]
    ctx.actions.write(spec, json.encode({
        "entries": listed + tars,
        "manifest": {"dest": MANIFEST, "preseed_dir": "/" + preseed_dir, "bundles": bundles},
    }))
    out = ctx.actions.declare_file(ctx.label.name + ".tar")
    manifest = ctx.actions.declare_file(ctx.label.name + ".manifest.json")
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = ["--spec", spec.path, "--output", out.path, "--manifest-output", manifest.path],
        inputs = inputs + ctx.files.tars + [spec],
        outputs = [out, manifest],
        mnemonic = "PreseedNodeImage",
        progress_message = "Writing node image %s" % ctx.label,
        use_default_shell_env = True,
    )
    return [
        DefaultInfo(files = depset([out]), runfiles = ctx.runfiles(files = [out])),
        OutputGroupInfo(manifest = depset([manifest])),
    ]

node_image = rule(
    implementation = _node_image_impl,
    doc = """Builds a node rootfs tarball that boots with its container images inside.

It holds each bundle at `<preseed_dir>/<namespace>/<bundle>.tar`, the loader at
`/usr/bin/preseed-loader` (its Python code and libraries under `/usr/lib/preseed-loader`; the node
needs `python3` 3.11), the systemd unit `preseed-loader.service` (after containerd, before kubelet,
enabled), containerd's config at `/etc/containerd/config.toml`, the manifest of every bundle at
`/etc/preseed/manifest.json` (see docs/rules.md), and any other `files` and `tars`. Entries are
sorted, dated 1970 and owned by root unless a tarball says otherwise, so the same inputs give the
same bytes. The output group `manifest` holds a copy of the manifest.""",
    attrs = {
        "bundles": attr.label_list(providers = [PreseedBundleInfo], doc = "The `preseed_bundle` targets to preseed, for any namespaces. Two bundles with the same namespace and file name are an error."),
        "files": attr.label_keyed_string_dict(allow_files = True, doc = "Other files of the rootfs: each target's single file (or directory, added recursively) and its absolute path. Executables get mode 0755, other files 0644."),
        "tars": attr.label_list(allow_files = [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"], doc = "Tarballs (for example `oci_layer` targets) whose entries are merged into the rootfs, keeping their modes and owners. An entry that clashes with another one is an error."),
        "containerd_config": attr.label(
            allow_single_file = [".toml"],
            default = "//rules/private:containerd_config.toml",
            doc = "containerd's config.toml for the node; its CRI `sandbox_image` should name a preseeded image.",
        ),
        "containerd_address": attr.string(default = "/run/containerd/containerd.sock", doc = "containerd's socket, as the loader's unit uses it."),
        "preseed_dir": attr.string(default = "/containerd/preseed", doc = "The preseed root: where the bundles go in the rootfs (`<preseed_dir>/<namespace>/<file>`), and where the loader reads them."),
        "loader": attr.label(default = "//loader", providers = [PyInfo], doc = "The loader program (a py_binary)."),
        "loader_args": attr.string_list(
            default = ["--prune"],
            doc = "More arguments of the loader in its systemd unit. The default `--prune` removes, at boot, the images of bundles that an upgraded node image no longer has (only images the loader itself labelled). See docs/loader.md for the flags.",
        ),
        "verify_manifest": attr.bool(
            default = True,
            doc = "Whether the unit passes `--manifest /etc/preseed/manifest.json`, so that the loader loads only bundles whose sha256 and size match the manifest and reports any other as tampering. A bundle is read in full the first time it is checked; later boots do not read it again while it and its images are unchanged (see reliability.md).",
        ),
        "_tool": attr.label(default = "//rules/private/tools:rootfs", executable = True, cfg = "exec"),
    },
)
