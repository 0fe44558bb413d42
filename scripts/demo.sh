#!/usr/bin/env bash
# Installs what is missing, builds the end-to-end node image, boots containerd from it in a temp
# folder, runs the node image's loader and runs its hello world container through CRI.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
bazel run //e2e:boot
