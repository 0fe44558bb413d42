"""Maps Bazel's target CPU to Go and OCI architecture names."""

_ARCHITECTURES = {
    "k8": "amd64",
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "ppc": "ppc64le",
    "s390x": "s390x",
}

def target_architecture(ctx):
    """The OCI/Go architecture name of the configuration's target CPU."""
    cpu = ctx.var.get("TARGET_CPU", "k8")
    if cpu not in _ARCHITECTURES:
        fail("unsupported target CPU %r; set the architecture explicitly" % cpu)
    return _ARCHITECTURES[cpu]
