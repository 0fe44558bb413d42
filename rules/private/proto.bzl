"""Python message and gRPC stub code generated from .proto files."""

def _py_grpc_compile_impl(ctx):
    outputs = []
    for src in ctx.files.srcs:
        if src.owner.package != ctx.label.package:
            fail("%s: .proto files must be in package %s" % (src.short_path, ctx.label.package))
        stem = src.basename[:-len(".proto")]
        outputs.append(ctx.actions.declare_file(stem + "_pb2.py"))
        outputs.append(ctx.actions.declare_file(stem + "_pb2_grpc.py"))
    args = ctx.actions.args()
    args.add("--proto_path=.")
    args.add("--python_out=" + ctx.bin_dir.path)
    args.add("--grpc_python_out=" + ctx.bin_dir.path)
    args.add_all(ctx.files.srcs)
    ctx.actions.run(
        executable = ctx.executable._protoc,
        arguments = [args],
        inputs = ctx.files.srcs + ctx.files.deps,
        outputs = outputs,
        mnemonic = "PreseedProtoc",
        progress_message = "Generating Python gRPC code for %s" % ctx.label,
        use_default_shell_env = True,
    )
    return [DefaultInfo(files = depset(outputs))]

_py_grpc_compile = rule(
    implementation = _py_grpc_compile_impl,
    doc = "Generates `<name>_pb2.py` and `<name>_pb2_grpc.py` for each .proto file.",
    attrs = {
        "srcs": attr.label_list(allow_files = [".proto"], mandatory = True, doc = "The .proto files of this package."),
        "deps": attr.label_list(allow_files = [".proto"], doc = ".proto files the sources import."),
        "_protoc": attr.label(default = "//rules/private:protoc", executable = True, cfg = "exec"),
    },
)

def py_grpc_library(name, srcs, proto_deps = [], deps = [], **kwargs):
    """A py_library of the message and stub modules generated from `srcs`.

    Args:
      name: the py_library's name.
      srcs: .proto files in this package; they import each other by workspace-relative path.
      proto_deps: .proto files of other packages that `srcs` import.
      deps: py_library targets of the modules generated from `proto_deps`.
      **kwargs: common attributes (visibility, tags) for the py_library.
    """
    _py_grpc_compile(
        name = name + "_gen",
        srcs = srcs,
        deps = proto_deps,
        tags = ["manual"],
        visibility = ["//visibility:private"],
    )
    native.py_library(
        name = name,
        srcs = [name + "_gen"],
        data = srcs,
        deps = deps + ["@pypi//:grpcio", "@pypi//:protobuf"],
        **kwargs
    )
