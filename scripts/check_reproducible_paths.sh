#!/usr/bin/env bash
# Copies the tracked sources into two checkouts at different paths, builds the node images and
# their bundles in each with its own output base, and requires bit-identical outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(//e2e:node_image //examples/node:node)
outputs=(
  e2e/node_image.tar
  examples/node/node.tar
  examples/node/node.manifest.json
  examples/go_service/service.tar
  examples/base_archive/app.tar.gz
  examples/base_archive/base.tar.zst
  examples/multiarch/arch.tar.zst
)

work=$(mktemp -d "${TMPDIR:-/tmp}/preseed-repro.XXXXXX")
checkouts=("$work/a/src" "$work/b/other/place/preseed")
cleanup() {
  for dir in "${checkouts[@]}"; do
    [ -d "$dir" ] && (cd "$dir" && bazel --output_base="$dir.out" shutdown >/dev/null 2>&1 || true)
  done
  chmod -R u+w "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

sums=()
for dir in "${checkouts[@]}"; do
  mkdir -p "$dir"
  git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$dir"
  echo "building in $dir (output base $dir.out)"
  (cd "$dir" && bazel --output_base="$dir.out" build --output_groups=+manifest "${targets[@]}")
  sums+=("$(cd "$dir/bazel-bin" && sha256sum "${outputs[@]}")")
done

echo "${sums[1]}"
if [ "${sums[0]}" != "${sums[1]}" ]; then
  echo "not reproducible: outputs differ between checkouts" >&2
  diff <(echo "${sums[0]}") <(echo "${sums[1]}") >&2 || true
  exit 1
fi
echo "reproducible: ${#outputs[@]} outputs identical across checkout paths and output bases"
