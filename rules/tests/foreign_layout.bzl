"""foreign_layout: an OCI layout directory without our providers, the shape other rule sets output."""

load("//rules:defs.bzl", "OciLayoutInfo")

def _foreign_layout_impl(ctx):
    out = ctx.actions.declare_directory(ctx.label.name)
    src = ctx.attr.image[OciLayoutInfo].layout
    ctx.actions.run_shell(
        command = 'cp -R "$1/." "$2"',
        arguments = [src.path, out.path],
        inputs = [src],
        outputs = [out],
        mnemonic = "PreseedTestCopyLayout",
    )
    return [DefaultInfo(files = depset([out]))]

foreign_layout = rule(
    implementation = _foreign_layout_impl,
    doc = "Copies an image's layout directory into a plain directory output, dropping OciLayoutInfo.",
    attrs = {"image": attr.label(mandatory = True, providers = [OciLayoutInfo], doc = "The image to copy.")},
)
