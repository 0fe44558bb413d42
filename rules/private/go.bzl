"""A static Go binary built with the Go toolchain found on PATH."""

load(":platforms.bzl", "target_architecture")

_BUILD = """set -eu
out="$PWD/$1"
export GOOS="$2" GOARCH="$3"
shift 3
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
export HOME="$work" GOCACHE="$work/cache" GOPATH="$work/gopath" GOENV=off GOPROXY=off GOFLAGS=-buildvcs=false
export CGO_ENABLED=0 GO111MODULE=on
go build -trimpath -ldflags="-s -w -buildid=" -o "$out" "$@"
"""

def _go_static_binary_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name)
    goarch = ctx.attr.goarch or target_architecture(ctx)
    args = ctx.actions.args()
    args.add(out.path)
    args.add(ctx.attr.goos)
    args.add(goarch)
    args.add_all(ctx.files.srcs)
    ctx.actions.run_shell(
        command = _BUILD,
        arguments = [args],
        inputs = ctx.files.srcs,
        outputs = [out],
        use_default_shell_env = True,
        mnemonic = "PreseedGoBuild",
        progress_message = "Building Go binary %s" % ctx.label,
    )
    return [DefaultInfo(files = depset([out]), executable = out)]

go_static_binary = rule(
    implementation = _go_static_binary_impl,
    doc = """Builds one `main` package of standard-library-only Go sources into a static binary.

The build runs `go build` from PATH with `CGO_ENABLED=0`, `-trimpath` and an empty build id, in a
private GOCACHE/GOPATH, so the same sources and Go version give the same bytes.""",
    attrs = {
        "srcs": attr.label_list(allow_files = [".go"], mandatory = True, doc = "The .go files of the main package."),
        "goos": attr.string(default = "linux", doc = "GOOS of the binary."),
        "goarch": attr.string(doc = "GOARCH of the binary; empty means the target CPU's architecture."),
    },
    executable = True,
)
