"""preseed_bundle: one OCI archive naming an image, for one containerd namespace."""

load(":providers.bzl", "OciLayoutInfo", "PreseedBundleInfo")

_NAMESPACE_MAX = 76
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

def validate_namespace(namespace):
    """Returns an error message if `namespace` breaks containerd's namespace rules, else None.

    containerd accepts labels of letters and digits joined by single '.', '_' or '-', at most 76
    characters long.
    """
    if not namespace:
        return "the namespace is empty"
    if len(namespace) > _NAMESPACE_MAX:
        return "namespace %r is longer than %d characters" % (namespace, _NAMESPACE_MAX)
    previous = "."
    for char in namespace.elems():
        if char in "._-":
            if previous in "._-":
                return "namespace %r must start with a letter or digit and not repeat or end with '.', '_' or '-'" % namespace
        elif char not in _ALNUM:
            return "namespace %r may hold only letters, digits, '.', '_' and '-'" % namespace
        previous = char
    if previous in "._-":
        return "namespace %r must end with a letter or digit" % namespace
    return None

def _preseed_bundle_impl(ctx):
    error = validate_namespace(ctx.attr.namespace)
    if error:
        fail(error)
    if not ctx.attr.repo_tags:
        fail("repo_tags: a bundle needs at least one image name")
    layout = ctx.attr.image[OciLayoutInfo].layout
    bundle = ctx.actions.declare_file(ctx.label.name + ".tar")
    args = ctx.actions.args()
    args.add("--layout", layout.path)
    args.add_all(ctx.attr.repo_tags, before_each = "--name")
    args.add("--output", bundle.path)
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = [args],
        inputs = [layout],
        outputs = [bundle],
        mnemonic = "PreseedBundle",
        progress_message = "Packaging preseed bundle %s" % ctx.label,
        use_default_shell_env = True,
    )
    return [
        DefaultInfo(files = depset([bundle]), runfiles = ctx.runfiles(files = [bundle])),
        PreseedBundleInfo(
            bundle = bundle,
            namespace = ctx.attr.namespace,
            names = ctx.attr.repo_tags,
            path = ctx.label.name + ".tar",
        ),
    ]

preseed_bundle = rule(
    implementation = _preseed_bundle_impl,
    doc = """Packages an image as an OCI archive (`<name>.tar`) whose index names it, ready to be
imported into containerd namespace `namespace` at boot. The index carries one manifest
descriptor per name with the annotations `io.containerd.image.name` (the full reference) and
`org.opencontainers.image.ref.name` (its tag), as `ctr images export` writes them, so the
bundle also imports with `ctr images import` and reads with `skopeo inspect oci-archive:`.""",
    attrs = {
        "image": attr.label(mandatory = True, providers = [OciLayoutInfo], doc = "The image: an `oci_image`."),
        "namespace": attr.string(default = "k8s.io", doc = "The containerd namespace to import into; `k8s.io` is the one Kubernetes uses through CRI."),
        "repo_tags": attr.string_list(doc = "Names of the image, e.g. `registry.example.com/app:1.0`; short names are made full as Docker does (`app` means `docker.io/library/app:latest`)."),
        "_tool": attr.label(default = "//rules/private/tools:bundle", executable = True, cfg = "exec"),
    },
)
