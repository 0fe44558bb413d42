#!/usr/bin/env bash
# Builds the end-to-end and example node images and their bundles, records their sha256, runs
# `bazel clean`, builds again and requires bit-identical outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(//e2e:hello //e2e:pause //e2e:node_image //examples/node:node)
outputs=(
  bazel-bin/e2e/hello.tar
  bazel-bin/e2e/pause.tar
  bazel-bin/e2e/node_image.tar
  bazel-bin/examples/go_service/service.tar
  bazel-bin/examples/base_archive/app.tar.gz
  bazel-bin/examples/base_archive/base.tar.zst
  bazel-bin/examples/multiarch/arch.tar.zst
  bazel-bin/examples/node/node.tar
  bazel-bin/examples/node/node.manifest.json
)

bazel build --output_groups=+manifest "${targets[@]}"
first=$(sha256sum "${outputs[@]}")
bazel clean
bazel build --output_groups=+manifest "${targets[@]}"
second=$(sha256sum "${outputs[@]}")
echo "$second"
if [ "$first" != "$second" ]; then
  echo "not reproducible: outputs differ after bazel clean" >&2
  diff <(echo "$first") <(echo "$second") >&2 || true
  exit 1
fi
echo "reproducible: ${#outputs[@]} outputs identical after bazel clean"
