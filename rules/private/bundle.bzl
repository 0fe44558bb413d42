"""preseed_bundle: one OCI archive naming an image, for one containerd namespace."""

load(":oci_image.bzl", "check_choice", "image_source")
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

_SUFFIXES = {"none": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}

def _preseed_bundle_impl(ctx):
    error = validate_namespace(ctx.attr.namespace)
    if error:
        fail(error)
    check_choice("compression", ctx.attr.compression, ["none", "gzip", "zstd"])
    image = image_source("image", ctx.attr.image)
    if not ctx.attr.repo_tags and OciLayoutInfo in ctx.attr.image:
        fail("repo_tags: %s carries no image names; give the bundle at least one" % ctx.attr.image.label)
    path = ctx.label.name + _SUFFIXES[ctx.attr.compression]
    bundle = ctx.actions.declare_file(path)
    metadata = ctx.actions.declare_file(ctx.label.name + ".bundle.json")
    args = ctx.actions.args()
    args.add("--image", image.path)
    args.add_all(ctx.attr.repo_tags, before_each = "--name")
    args.add("--compression", ctx.attr.compression)
    args.add("--output", bundle.path)
    args.add("--metadata", metadata.path)
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = [args],
        inputs = [image],
        outputs = [bundle, metadata],
        mnemonic = "PreseedBundle",
        progress_message = "Packaging preseed bundle %s" % ctx.label,
        use_default_shell_env = True,
    )
    return [
        DefaultInfo(files = depset([bundle]), runfiles = ctx.runfiles(files = [bundle])),
        OutputGroupInfo(metadata = depset([metadata])),
        PreseedBundleInfo(
            bundle = bundle,
            namespace = ctx.attr.namespace,
            names = ctx.attr.repo_tags,
            path = path,
            metadata = metadata,
        ),
    ]

preseed_bundle = rule(
    implementation = _preseed_bundle_impl,
    doc = """Packages an image as an OCI archive whose index names it, ready to be imported into
containerd namespace `namespace` at boot. The file is `<name>.tar`, `<name>.tar.gz` or
`<name>.tar.zst` by `compression`. The index carries one descriptor per name with the annotations
`io.containerd.image.name` (the full reference) and `org.opencontainers.image.ref.name` (its tag),
as `ctr images export` writes them, so the uncompressed bundle also imports with
`ctr images import` and reads with `skopeo inspect oci-archive:`.""",
    attrs = {
        "image": attr.label(
            mandatory = True,
            allow_files = True,
            doc = "The image: an `oci_image` or `oci_image_index`, an OCI layout directory made by another rule (such as rules_oci's `oci_image`), or an OCI or docker archive file (`.tar`, `.tar.gz`, `.tgz`, `.tar.zst`, `.tzst`).",
        ),
        "namespace": attr.string(default = "k8s.io", doc = "The containerd namespace to import into; `k8s.io` is the one Kubernetes uses through CRI. Checked against containerd's rules: letters and digits joined by single `.`, `_` or `-`, at most 76 characters."),
        "repo_tags": attr.string_list(doc = "Names of the image, e.g. `registry.example.com/app:1.0`; short names are made full as Docker does (`app` means `docker.io/library/app:latest`). Required for `oci_image` and `oci_image_index`; for an archive, empty keeps the names it carries (a docker archive's RepoTags, an OCI archive's `io.containerd.image.name` annotations)."),
        "compression": attr.string(default = "none", doc = "Compression of the whole bundle: `none` (`<name>.tar`), `gzip` (`<name>.tar.gz`) or `zstd` (`<name>.tar.zst`). The loader reads all three; `ctr images import` reads `none`."),
        "_tool": attr.label(default = "//rules/private/tools:bundle", executable = True, cfg = "exec"),
    },
)
