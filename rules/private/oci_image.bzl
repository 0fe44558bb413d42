"""oci_image and oci_image_index: OCI image layout directories."""

load(":layer.bzl", "LAYER_ATTRS", "layer_entries")
load(":platforms.bzl", "target_architecture")
load(":providers.bzl", "OciLayoutInfo")

COMPRESSIONS = ["gzip", "zstd", "none"]

ARCHIVE_SUFFIXES = [".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"]

def check_choice(attribute, value, choices):
    """Fails unless value is one of choices."""
    if value not in choices:
        fail("%s: %r is not one of %s" % (attribute, value, ", ".join(choices)))

def image_source(attribute, target):
    """The File of an image source: an OciLayoutInfo layout, a layout directory or an archive."""
    if OciLayoutInfo in target:
        return target[OciLayoutInfo].layout
    files = target.files.to_list()
    if len(files) != 1:
        fail("%s: %s must produce exactly one file (an OCI layout directory, or an OCI or docker archive), it produces %d" % (attribute, target.label, len(files)))
    src = files[0]
    if not src.is_directory and not [s for s in ARCHIVE_SUFFIXES if src.basename.endswith(s)]:
        fail("%s: %s is neither an OCI layout directory nor an archive (%s)" % (attribute, src.short_path, ", ".join(ARCHIVE_SUFFIXES)))
    return src

def _oci_image_impl(ctx):
    check_choice("compression", ctx.attr.compression, COMPRESSIONS)
    entries, inputs = layer_entries(ctx)
    base = image_source("base", ctx.attr.base) if ctx.attr.base else None
    if not base and not ctx.attr.entrypoint and not ctx.attr.cmd:
        fail("an image needs an entrypoint or a cmd (or a base image that has one)")
    spec = {
        "entries": entries,
        "layers": [f.path for f in ctx.files.layers],
        "compression": ctx.attr.compression,
        "entrypoint": ctx.attr.entrypoint,
        "cmd": ctx.attr.cmd,
        "env": ctx.attr.env,
        "workdir": ctx.attr.workdir,
        "user": ctx.attr.user,
        "labels": ctx.attr.labels,
        "annotations": ctx.attr.annotations,
        "exposed_ports": ctx.attr.exposed_ports,
        "os": ctx.attr.os,
        "architecture": ctx.attr.architecture or target_architecture(ctx),
        "variant": ctx.attr.variant,
    }
    if base:
        spec["base"] = base.path
        inputs.append(base)
    spec_file = ctx.actions.declare_file(ctx.label.name + ".spec.json")
    ctx.actions.write(spec_file, json.encode(spec))
    layout = ctx.actions.declare_directory(ctx.label.name)
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = ["--spec", spec_file.path, "--output", layout.path],
        inputs = [spec_file] + inputs + ctx.files.layers,
        outputs = [layout],
        mnemonic = "PreseedOciImage",
        progress_message = "Writing OCI image layout %s" % ctx.label,
        use_default_shell_env = True,
    )
    return [
        DefaultInfo(files = depset([layout]), runfiles = ctx.runfiles(files = [layout])),
        OciLayoutInfo(layout = layout),
    ]

oci_image = rule(
    implementation = _oci_image_impl,
    doc = """Builds an OCI image layout directory (oci-layout, index.json, blobs/sha256/) holding one
image: the layers of `base` (if any), one layer per tarball in `layers`, then one layer of `files`,
`directories` and `symlinks` (when any is given). Config fields that are set replace the base's;
`env`, `labels` and `exposed_ports` are merged into the base's; an `entrypoint` without a `cmd`
clears the base's cmd, as in a Dockerfile. Layers are gzip unless `compression` says otherwise.
The output is deterministic: file times, owners and JSON key order are fixed.""",
    attrs = dict(LAYER_ATTRS, **{
        "base": attr.label(
            allow_files = True,
            doc = "The base image: an `oci_image`, an OCI layout directory made by another rule, or an OCI or docker archive file (`.tar`, `.tar.gz`, `.tgz`, `.tar.zst`, `.tzst`). For a multi-platform base, the image of `os`/`architecture`/`variant` is used.",
        ),
        "layers": attr.label_list(
            allow_files = ARCHIVE_SUFFIXES,
            doc = "Tarballs (uncompressed, gzip or zstd), each added as one layer in order, e.g. `oci_layer` targets.",
        ),
        "compression": attr.string(default = "gzip", doc = "Compression of the layers this rule writes: `gzip`, `zstd` or `none`. Base layers keep theirs."),
        "entrypoint": attr.string_list(doc = "The config's Entrypoint. Needed unless `cmd` or the base sets one."),
        "cmd": attr.string_list(doc = "The config's Cmd."),
        "env": attr.string_dict(doc = "Environment variables of the config, merged into the base's."),
        "workdir": attr.string(doc = "The config's WorkingDir."),
        "user": attr.string(doc = "The config's User, as `uid[:gid]` or a name."),
        "labels": attr.string_dict(doc = "The config's Labels, merged into the base's."),
        "annotations": attr.string_dict(doc = "Annotations of the image manifest."),
        "exposed_ports": attr.string_list(doc = "Ports the config exposes, as `<port>[/tcp|udp|sctp]`, e.g. `[\"8080\", \"53/udp\"]`."),
        "os": attr.string(default = "linux", doc = "The image's operating system."),
        "architecture": attr.string(doc = "The image's architecture (amd64, arm64, ...); empty means the target CPU's."),
        "variant": attr.string(doc = "The architecture variant (for example v8 for arm64), if any."),
        "_tool": attr.label(default = "//rules/private/tools:oci_layout", executable = True, cfg = "exec"),
    }),
)

def _oci_image_index_impl(ctx):
    layouts = [target[OciLayoutInfo].layout for target in ctx.attr.images]
    if not layouts:
        fail("images: an image index needs at least one image")
    args = ctx.actions.args()
    args.add_all(layouts, before_each = "--layout", expand_directories = False)
    for key in sorted(ctx.attr.annotations):
        args.add("--annotation", "%s=%s" % (key, ctx.attr.annotations[key]))
    layout = ctx.actions.declare_directory(ctx.label.name)
    args.add("--output", layout.path)
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = [args],
        inputs = layouts,
        outputs = [layout],
        mnemonic = "PreseedOciImageIndex",
        progress_message = "Writing OCI image index %s" % ctx.label,
        use_default_shell_env = True,
    )
    return [
        DefaultInfo(files = depset([layout]), runfiles = ctx.runfiles(files = [layout])),
        OciLayoutInfo(layout = layout),
    ]

oci_image_index = rule(
    implementation = _oci_image_index_impl,
    doc = """Builds an OCI image layout directory whose index.json points to one image index listing
`images`, one per platform, in the given order. containerd (and the loader) pick the node's
platform from it. Two images with the same platform are an error.""",
    attrs = {
        "images": attr.label_list(mandatory = True, providers = [OciLayoutInfo], doc = "`oci_image` targets, each for a different os/architecture/variant."),
        "annotations": attr.string_dict(doc = "Annotations of the image index."),
        "_tool": attr.label(default = "//rules/private/tools:image_index", executable = True, cfg = "exec"),
    },
)
