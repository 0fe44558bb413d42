"""Preseed loader: imports OCI archive bundles into containerd."""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
