"""Image names: from annotations or RepoTags, made full references as Docker does."""

from __future__ import annotations

import re

DEFAULT_DOMAIN = "docker.io"
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


def is_tag(value: str) -> bool:
    return bool(_TAG_RE.match(value))


def normalize(reference: str) -> str | None:
    """Docker's rule: 'app' is docker.io/library/app:latest; None if not a valid reference."""
    name, digest = reference, ""
    if "@" in name:
        name, digest = name.split("@", 1)
        if not re.match(r"^sha256:[0-9a-f]{64}$", digest):
            return None
    tag = ""
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        if not is_tag(tag):
            return None
    parts = name.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, parts[1:]
    else:
        domain, path = DEFAULT_DOMAIN, parts
    if domain == DEFAULT_DOMAIN and len(path) == 1:
        path = ["library", *path]
    if not path or not all(_COMPONENT_RE.match(p) for p in path):
        return None
    full = f"{domain}/{'/'.join(path)}"
    if tag:
        full += f":{tag}"
    elif not digest:
        full += ":latest"
    return f"{full}@{digest}" if digest else full


def from_ref_name(ref_name: str, bundle_stem: str) -> str | None:
    """org.opencontainers.image.ref.name: a full reference, or a bare tag.

    A bare tag T is made full with the bundle's file name: bundle redis.tar with ref name
    7.2 gives docker.io/library/redis:7.2.
    """
    if "/" in ref_name or ":" in ref_name or "@" in ref_name:
        return normalize(ref_name)
    if is_tag(ref_name):
        return normalize(f"{bundle_stem}:{ref_name}")
    return None


def by_digest(bundle_stem: str, digest: str) -> str:
    """The name of an image that has none: <bundle stem>@<digest>, made full."""
    return normalize(f"{bundle_stem}@{digest}") or f"{bundle_stem}@{digest}"


def bundle_stem(file_name: str) -> str:
    """A bundle's file name without its archive suffix, as a valid repository component."""
    for suffix in (".tar.gz", ".tgz", ".tar.zst", ".tzst", ".tar"):
        if file_name.endswith(suffix):
            file_name = file_name[: -len(suffix)]
            break
    stem = re.sub(r"[^a-z0-9]+", "-", file_name.lower()).strip("-")
    return stem or "bundle"
