"""Providers shared by the rules."""

OciLayoutInfo = provider(
    doc = "An OCI image layout directory whose index.json points to one image or one image index.",
    fields = {
        "layout": "File: the layout directory (a tree artifact with oci-layout, index.json, blobs/).",
    },
)

PreseedBundleInfo = provider(
    doc = "A preseed bundle: an OCI archive to import into one containerd namespace.",
    fields = {
        "bundle": "File: the bundle tarball.",
        "namespace": "string: the containerd namespace the bundle is imported into.",
        "names": "list of string: the image references given as `repo_tags` (empty when the bundle keeps an archive's own names; `metadata` has the final list).",
        "path": "string: the bundle's file name in its namespace folder: `<name>.tar`, `<name>.tar.gz` or `<name>.tar.zst`.",
        "metadata": "File: JSON `{\"names\": [...]}` with the normalized names the bundle carries.",
    },
)
