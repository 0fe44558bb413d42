"""oci_image: files placed at paths in one layer, with an image config, as an OCI layout."""

load(":platforms.bzl", "target_architecture")
load(":providers.bzl", "OciLayoutInfo")

def _oci_image_impl(ctx):
    files = {}
    for target, dest in ctx.attr.files.items():
        if not dest.startswith("/"):
            fail("files: destination %r of %s must be an absolute path" % (dest, target.label))
        target_files = target.files.to_list()
        if len(target_files) != 1:
            fail("files: %s must produce exactly one file, it produces %d" % (target.label, len(target_files)))
        executable = target[DefaultInfo].files_to_run.executable
        if dest in files:
            fail("files: two files have the destination %r" % dest)
        files[dest] = struct(
            src = target_files[0],
            mode = "0755" if executable or dest in ctx.attr.executables else "0644",
        )
    if not ctx.attr.entrypoint and not ctx.attr.cmd:
        fail("an image needs an entrypoint or a cmd")
    spec = struct(
        files = [struct(src = files[dest].src.path, dest = dest, mode = files[dest].mode) for dest in sorted(files)],
        entrypoint = ctx.attr.entrypoint,
        cmd = ctx.attr.cmd,
        env = ctx.attr.env,
        workdir = ctx.attr.workdir,
        user = ctx.attr.user,
        labels = ctx.attr.labels,
        annotations = ctx.attr.annotations,
        os = ctx.attr.os,
        architecture = ctx.attr.architecture or target_architecture(ctx),
        variant = ctx.attr.variant,
    )
    spec_file = ctx.actions.declare_file(ctx.label.name + ".spec.json")
    ctx.actions.write(spec_file, json.encode(spec))
    layout = ctx.actions.declare_directory(ctx.label.name)
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = ["--spec", spec_file.path, "--output", layout.path],
        inputs = [spec_file] + [f.src for f in files.values()],
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
    doc = """Builds an OCI image layout directory (oci-layout, index.json, blobs/sha256/) with one
gzip layer holding `files` and a config with the given entrypoint, cmd, env and labels.
The output is deterministic: file times, owners and JSON key order are fixed.""",
    attrs = {
        "files": attr.label_keyed_string_dict(
            allow_files = True,
            doc = "Each target's single file and the absolute path it gets in the image. Executables get mode 0755, other files 0644.",
        ),
        "executables": attr.string_list(doc = "Destinations in `files` that get mode 0755 even though their target is not executable."),
        "entrypoint": attr.string_list(doc = "The config's Entrypoint."),
        "cmd": attr.string_list(doc = "The config's Cmd."),
        "env": attr.string_dict(doc = "Environment variables of the config."),
        "workdir": attr.string(doc = "The config's WorkingDir."),
        "user": attr.string(doc = "The config's User, as `uid[:gid]` or a name."),
        "labels": attr.string_dict(doc = "The config's Labels."),
        "annotations": attr.string_dict(doc = "Annotations of the image manifest."),
        "os": attr.string(default = "linux", doc = "The image's operating system."),
        "architecture": attr.string(doc = "The image's architecture (amd64, arm64, ...); empty means the target CPU's."),
        "variant": attr.string(doc = "The architecture variant (for example v8 for arm64), if any."),
        "_tool": attr.label(default = "//rules/private/tools:oci_layout", executable = True, cfg = "exec"),
    },
)
