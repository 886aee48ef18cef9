#!/usr/bin/env bash
# CI gate: rebuilds the Hamming kernel into a temp file and fails if it differs from the
# committed wasm/hamming.wasm (stale binary or non-reproducible build).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

bash "$root/scripts/build-wasm.sh" "$tmp/hamming.wasm"
if cmp -s "$tmp/hamming.wasm" "$root/wasm/hamming.wasm"; then
  echo "wasm/hamming.wasm is up to date ($(wc -c <"$root/wasm/hamming.wasm") bytes)"
else
  echo "wasm/hamming.wasm differs from a fresh build of wasm/kernel: run scripts/build-wasm.sh and commit." >&2
  echo "Toolchain used: $(${KERNEL_RUSTC:-/usr/bin/rustc} --version), $(${WASM_OPT:-wasm-opt} --version)" >&2
  echo "(the committed binary was built with rustc 1.63.0 (Debian) and wasm-opt version 108)" >&2
  exit 1
fi
