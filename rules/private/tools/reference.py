"""Docker image reference normalization, as done by containerd's CRI.

normalize() matches ParseDockerRef from containerd's reference/docker
package: familiar names get the docker.io domain (and "library/" for
single-component names), a missing tag becomes "latest", and a reference
with both a tag and a digest keeps only the digest.
"""

from __future__ import annotations

import re

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO = "library"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALPHA_NUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]*)"
_NAME_COMPONENT = rf"{_ALPHA_NUMERIC}(?:{_SEPARATOR}{_ALPHA_NUMERIC})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:({_DOMAIN})/)?({_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*)"
_REFERENCE_RE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?",
                           re.ASCII)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if (not sep or (not any(c in first for c in ".:")
                    and first != "localhost" and first.lower() == first)):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = f"{OFFICIAL_REPO}/{remainder}"
    return domain, remainder


def _check_digest(ref: str, digest: str) -> None:
    algorithm, _, encoded = digest.partition(":")
    length = _DIGEST_HEX_LENGTHS.get(algorithm)
    if length is None:
        raise ValueError(f"invalid reference {ref!r}: unsupported digest "
                         f"algorithm {algorithm!r}")
    if not re.fullmatch(rf"[a-f0-9]{{{length}}}", encoded):
        raise ValueError(f"invalid reference {ref!r}: {algorithm} digest must "
                         f"be {length} lowercase hex characters")


def parse(ref: str) -> tuple[str, str, str]:
    """Returns (name, tag, digest) of the normalized ref; tag or digest may be "".

    Raises ValueError for an invalid reference.
    """
    if not ref:
        raise ValueError("invalid reference '': empty reference")
    if _IDENTIFIER_RE.fullmatch(ref):
        raise ValueError(f"invalid reference {ref!r}: cannot be a 64-character "
                         "hexadecimal string")
    domain, remainder = _split_domain(ref)
    repository = remainder.split(":", 1)[0]
    if repository.lower() != repository:
        raise ValueError(f"invalid reference {ref!r}: repository name must be "
                         "lowercase")
    full = f"{domain}/{remainder}"
    match = _REFERENCE_RE.fullmatch(full)
    if match is None:
        raise ValueError(f"invalid reference {ref!r}: invalid reference format")
    name, tag, digest = match.group(1), match.group(4), match.group(5)
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise ValueError(f"invalid reference {ref!r}: repository name must not "
                         f"be more than {NAME_TOTAL_LENGTH_MAX} characters")
    if digest:
        _check_digest(ref, digest)
        return name, "", digest
    return name, tag or DEFAULT_TAG, ""


def normalize(ref: str) -> str:
    """Returns the fully qualified form, e.g. docker.io/library/hello:latest."""
    name, tag, digest = parse(ref)
    return f"{name}@{digest}" if digest else f"{name}:{tag}"


def tag_of(ref: str) -> str:
    """Returns the org.opencontainers.image.ref.name containerd exports.

    That is the part after the repository of the normalized name: the tag
    for a tagged reference, "@<digest>" for a digest reference.
    """
    _, tag, digest = parse(ref)
    return f"@{digest}" if digest else tag
