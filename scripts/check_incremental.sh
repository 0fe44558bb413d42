#!/usr/bin/env bash
# In a copy of the tracked sources, builds the example node image, changes the Go service's source,
# rebuilds with an execution log, and requires that exactly that image's chain (Go binary, image,
# bundle) and the node image were rebuilt, and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
target=//examples/node:node
work=$(mktemp -d "${TMPDIR:-/tmp}/preseed-incr.XXXXXX")
src="$work/src"
cleanup() {
  [ -d "$src" ] && (cd "$src" && bazel --output_base="$work/out" shutdown >/dev/null 2>&1 || true)
  chmod -R u+w "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$src"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$src"
cd "$src"
bazel --output_base="$work/out" build "$target"
sed -i 's|fmt.Fprintf(w, "%s\\n", |fmt.Fprintf(w, "%s!\\n", |' examples/go_service/main.go
grep -q '"%s!\\n"' examples/go_service/main.go || { echo "could not change examples/go_service/main.go" >&2; exit 1; }
bazel --output_base="$work/out" build --execution_log_json_file="$work/exec.json" "$target"

python3 - "$work/exec.json" <<'PY'
import json
import sys

text = open(sys.argv[1]).read()
decoder, pos, ran = json.JSONDecoder(), 0, set()
while True:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos == len(text):
        break
    spawn, pos = decoder.raw_decode(text, pos)
    for output in spawn["listedOutputs"]:
        ran.add((spawn["mnemonic"], output.split("/bin/", 1)[1]))
expected = {
    ("PreseedGoBuild", "examples/go_service/service_bin"),
    ("PreseedOciImage", "examples/go_service/image"),
    ("PreseedBundle", "examples/go_service/service.tar"),
    ("PreseedBundle", "examples/go_service/service.bundle.json"),
    ("PreseedNodeImage", "examples/node/node.tar"),
    ("PreseedNodeImage", "examples/node/node.manifest.json"),
}
for mnemonic, output in sorted(ran):
    print(f"rebuilt: {mnemonic} {output}")
if ran != expected:
    print(f"expected exactly: {sorted(expected)}", file=sys.stderr)
    sys.exit(1)
print("incremental: only the changed image's chain and the node image were rebuilt")
PY
