"""oci_layer: a reproducible tarball of files, directories and symlinks, for image layers and node images."""

load(":layer.bzl", "LAYER_ATTRS", "layer_entries")

def _oci_layer_impl(ctx):
    entries, inputs = layer_entries(ctx)
    spec = ctx.actions.declare_file(ctx.label.name + ".spec.json")
    ctx.actions.write(spec, json.encode({"entries": entries}))
    out = ctx.actions.declare_file(ctx.label.name + ".tar")
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = ["--spec", spec.path, "--output", out.path],
        inputs = inputs + [spec],
        outputs = [out],
        mnemonic = "PreseedLayer",
        progress_message = "Writing layer %s" % ctx.label,
        use_default_shell_env = True,
    )
    return [DefaultInfo(files = depset([out]))]

oci_layer = rule(
    implementation = _oci_layer_impl,
    doc = """Builds an uncompressed tarball `<name>.tar` of files, directories and symlinks with
their modes and numeric owners. Use it in `oci_image.layers` (one layer) or `node_image.tars`
(merged into the rootfs). Entries are sorted, dated 1970 and have no owner names, and every parent
directory is present (0755, root), so the same inputs give the same bytes.""",
    attrs = dict(LAYER_ATTRS, **{
        "_tool": attr.label(default = "//rules/private/tools:rootfs", executable = True, cfg = "exec"),
    }),
)
