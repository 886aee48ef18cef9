#!/usr/bin/env bash
# The whole test suite (the README's test command; .ci/run calls it): install, then the
# WebAssembly reproducibility check, the kernel's native tests, the TypeScript tests (Node and
# workerd), and the model's Python tests. Benchmarks and training are separate commands.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

echo "== wasm: committed hamming.wasm equals a fresh build"
bash scripts/check-wasm.sh
echo "== wasm kernel: native cargo test"
(cd wasm/kernel && RUSTC=/usr/bin/rustc /usr/bin/cargo test --quiet --offline)
echo "== TypeScript: vitest (node + workers projects)"
npx vitest run
echo "== Python: model tests"
(cd models && /usr/bin/python3 -m pytest ../test/python -q -p no:cacheprovider)
