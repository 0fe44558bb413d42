"""node_image: a rootfs tarball with preseed bundles, the loader, its systemd unit and containerd's config."""

load(":providers.bzl", "PreseedBundleInfo")

_LOADER_LIB = "usr/lib/preseed-loader"
_LOADER_BIN = "usr/bin/preseed-loader"
_UNIT = "etc/systemd/system/preseed-loader.service"

_LAUNCHER = """#!/bin/sh
# Runs the preseed loader installed beside this script (see {unit}).
lib="$(CDPATH= cd -- "$(dirname -- "$0")/../lib/preseed-loader" && pwd -P)"
PYTHONPATH="{pythonpath}" exec python3 -s -B -P -m loader.main "$@"
"""

_SERVICE = """[Unit]
Description=Import preseeded container images into containerd
Documentation=file:///{bin}
After=containerd.service
Requires=containerd.service
Before=kubelet.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/{bin} --address {address} --preseed-dir {preseed_dir}

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

    for target in ctx.attr.bundles:
        info = target[PreseedBundleInfo]
        _add(entries, {"dest": "%s/%s/%s" % (preseed_dir, info.namespace, info.path), "src": info.bundle.path, "mode": "0644"})
        inputs.append(info.bundle)

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

    unit = ctx.actions.declare_file(ctx.label.name + ".preseed-loader.service")
    ctx.actions.write(unit, _SERVICE.format(
        bin = _LOADER_BIN,
        address = ctx.attr.containerd_address,
        preseed_dir = "/" + preseed_dir,
    ))
    _add(entries, {"dest": _UNIT, "src": unit.path, "mode": "0644"})
    for wants in ["multi-user.target.wants", "kubelet.service.wants"]:
        _add(entries, {"dest": "etc/systemd/system/%s/preseed-loader.service" % wants, "symlink": "../preseed-loader.service"})
    inputs.append(unit)

    config = ctx.file.containerd_config
    _add(entries, {"dest": "etc/containerd/config.toml", "src": config.path, "mode": "0644"})
    inputs.append(config)

    spec = ctx.actions.declare_file(ctx.label.name + ".spec.json")
    ctx.actions.write(spec, json.encode({"entries": [entries[dest] for dest in sorted(entries)]}))
    out = ctx.actions.declare_file(ctx.label.name + ".tar")
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = ["--spec", spec.path, "--output", out.path],
        inputs = inputs + [spec],
        outputs = [out],
        mnemonic = "PreseedNodeImage",
        progress_message = "Writing node image %s" % ctx.label,
        use_default_shell_env = True,
    )
    return [DefaultInfo(files = depset([out]), runfiles = ctx.runfiles(files = [out]))]

node_image = rule(
    implementation = _node_image_impl,
    doc = """Builds a node rootfs tarball that boots with its container images inside.

It holds each bundle at `<preseed_dir>/<namespace>/<bundle>.tar`, the loader at
`/usr/bin/preseed-loader` (its Python code and libraries under `/usr/lib/preseed-loader`; the node
needs `python3` 3.11), the systemd unit `preseed-loader.service` (after containerd, before kubelet,
enabled), and containerd's config at `/etc/containerd/config.toml`. Entries are sorted, owned by
root and dated 1970, so the same inputs give the same bytes.""",
    attrs = {
        "bundles": attr.label_list(providers = [PreseedBundleInfo], doc = "The `preseed_bundle` targets to preseed."),
        "containerd_config": attr.label(
            allow_single_file = [".toml"],
            default = "//rules/private:containerd_config.toml",
            doc = "containerd's config.toml for the node; its CRI `sandbox_image` should name a preseeded image.",
        ),
        "containerd_address": attr.string(default = "/run/containerd/containerd.sock", doc = "containerd's socket, as the loader's unit uses it."),
        "preseed_dir": attr.string(default = "/containerd/preseed", doc = "Where the bundles go in the rootfs, and where the loader reads them."),
        "loader": attr.label(default = "//loader", providers = [PyInfo], doc = "The loader program (a py_binary)."),
        "_tool": attr.label(default = "//rules/private/tools:rootfs", executable = True, cfg = "exec"),
    },
)
