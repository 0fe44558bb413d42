#!/usr/bin/env bash
# Builds the end-to-end node image and its bundles, records their sha256, runs `bazel clean`,
# builds again and requires bit-identical outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(//e2e:hello //e2e:pause //e2e:node_image)
outputs=(bazel-bin/e2e/hello.tar bazel-bin/e2e/pause.tar bazel-bin/e2e/node_image.tar)

bazel build "${targets[@]}"
first=$(sha256sum "${outputs[@]}")
bazel clean
bazel build "${targets[@]}"
second=$(sha256sum "${outputs[@]}")
echo "$second"
if [ "$first" != "$second" ]; then
  echo "not reproducible: outputs differ after bazel clean" >&2
  diff <(echo "$first") <(echo "$second") >&2 || true
  exit 1
fi
echo "reproducible: ${#outputs[@]} outputs identical after bazel clean"
