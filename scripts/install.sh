#!/usr/bin/env bash
# Installs what building and testing need on Debian 12, as root, when it is missing:
# Bazel 4 (bazel-bootstrap), containerd, runc, Go, skopeo and umoci from Debian's packages.
set -euo pipefail

packages=(bazel-bootstrap containerd runc golang-go skopeo umoci python3 ca-certificates)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "python3 must be CPython 3.11 (the locked wheels are built for it): $(python3 --version)" >&2
  exit 1
fi
