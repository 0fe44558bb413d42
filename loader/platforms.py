"""The host platform and matching of OCI platform objects against it."""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass
from typing import Mapping

_ARCH = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        parts = [self.os, self.architecture] + ([self.variant] if self.variant else [])
        return "/".join(parts)

    def matches(self, spec: Mapping[str, str] | None) -> bool:
        """True if an OCI platform object describes this platform."""
        if not spec:
            return False
        if spec.get("os") != self.os or spec.get("architecture") != self.architecture:
            return False
        variant = spec.get("variant", "")
        if not variant or not self.variant:
            return True
        if self.architecture == "arm64":
            return variant in ("v8", "8")
        return variant == self.variant


def host() -> Platform:
    """The platform this process runs on (linux only)."""
    machine = _platform.machine().lower()
    arch, variant = _ARCH.get(machine, (machine, ""))
    return Platform("linux", arch, variant)
