"""Public API: build OCI images, package them as preseed bundles, and bake them into node images.

    load("//rules:defs.bzl", "go_static_binary", "node_image", "oci_image", "preseed_bundle")
"""

load("//rules/private:bundle.bzl", _preseed_bundle = "preseed_bundle")
load("//rules/private:go.bzl", _go_static_binary = "go_static_binary")
load("//rules/private:node_image.bzl", _node_image = "node_image")
load("//rules/private:oci_image.bzl", _oci_image = "oci_image", _oci_image_index = "oci_image_index")
load("//rules/private:oci_layer.bzl", _oci_layer = "oci_layer")
load("//rules/private:providers.bzl", _OciLayoutInfo = "OciLayoutInfo", _PreseedBundleInfo = "PreseedBundleInfo")

go_static_binary = _go_static_binary
oci_layer = _oci_layer
oci_image = _oci_image
oci_image_index = _oci_image_index
preseed_bundle = _preseed_bundle
node_image = _node_image
OciLayoutInfo = _OciLayoutInfo
PreseedBundleInfo = _PreseedBundleInfo
