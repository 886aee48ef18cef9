#!/usr/bin/env bash
# Reproduces the workerd finding of docs/RUNTIMES.md: builds a throw-away Worker around
# onnxruntime-web (as published, with wasmBinary, and with a one-line patch that passes
# Emscripten's instantiateWasm hook through), serves it with `wrangler dev --local`, asks each
# mode once on a fresh isolate (ort caches a failed initialisation), times 20 patched requests,
# and reports the upload size of a Worker holding only ort + its wasm (the model would live in KV).
# Usage: bash scripts/workerd-ort/run.sh [MODEL.onnx]   (default models/mednist-darf-b64.onnx)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-models/mednist-darf-b64.onnx}
NODE=$(npx node -e 'process.stdout.write(process.execPath)')
WRANGLER=node_modules/wrangler/bin/wrangler.js
ORT=node_modules/onnxruntime-web/dist
PORT=${PORT:-18799}
dir=$(mktemp -d)
trap 'kill $dev 2>/dev/null || true; rm -rf "$dir"' EXIT
cp scripts/workerd-ort/worker.mjs "$dir/"
cp "$ORT/ort-wasm-simd-threaded.wasm" "$dir/"
cp "$ORT/ort-wasm-simd-threaded.wasm" "$dir/ort-wasm-bytes.bin"
cp "$ORT/ort.wasm.bundle.min.mjs" "$dir/ort.plain.mjs"
cp "$MODEL" "$dir/model.bin"
# The patch: ort builds the Emscripten module options as {numThreads}; add the hook to them.
sed -E 's/let ([A-Za-z_$]+)=\{numThreads:([A-Za-z_$]+)\};/let \1={numThreads:\2,instantiateWasm:globalThis.__medhashInstantiateWasm};/' \
  "$ORT/ort.wasm.bundle.min.mjs" > "$dir/ort.patched.mjs"
grep -q __medhashInstantiateWasm "$dir/ort.patched.mjs" || { echo "run.sh: the patch did not apply to this onnxruntime-web" >&2; exit 1; }
cat > "$dir/wrangler.toml" <<TOML
name = "ort-probe"
main = "worker.mjs"
compatibility_date = "2025-09-01"
rules = [{ type = "CompiledWasm", globs = ["**/*.wasm"], fallthrough = false }, { type = "Data", globs = ["**/*.bin"], fallthrough = false }]
TOML
serve() {
  # exec: $dev is wrangler itself, so that killing it also stops its workerd
  (cd "$dir" && CI=1 exec "$NODE" "$OLDPWD/$WRANGLER" dev --local --ip 127.0.0.1 --port "$PORT" > "$dir/dev.log" 2>&1) & dev=$!
  for _ in $(seq 1 120); do grep -q "Ready on" "$dir/dev.log" && return 0; sleep 0.5; done
  echo "run.sh: wrangler dev did not start" >&2; cat "$dir/dev.log" >&2; exit 1
}
for mode in plain binary patched; do
  serve
  curl -s "http://127.0.0.1:$PORT/?mode=$mode"; echo
  if [ "$mode" = patched ]; then
    for _ in $(seq 1 20); do curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$PORT/?mode=patched"; done |
      sort -n | awk '{t[NR]=$1*1000} END {printf "{\"mode\":\"patched\",\"requests\":%d,\"p50_ms\":%.1f,\"min_ms\":%.1f,\"max_ms\":%.1f}\n", NR, t[int(NR/2)+1], t[1], t[NR]}'
  fi
  kill $dev; wait $dev 2>/dev/null || true
done
# Size of a Worker with ort + wasm only.
mkdir "$dir/min"
cp "$dir/ort.patched.mjs" "$dir/ort-wasm-simd-threaded.wasm" "$dir/min/"
printf "import wasm from './ort-wasm-simd-threaded.wasm';\nimport * as ort from './ort.patched.mjs';\nexport default { fetch: () => new Response(String(typeof ort.InferenceSession) + String(wasm)) };\n" > "$dir/min/worker.mjs"
printf 'name = "ort-size"\nmain = "worker.mjs"\ncompatibility_date = "2025-09-01"\n' > "$dir/min/wrangler.toml"
(cd "$dir/min" && "$NODE" "$OLDPWD/$WRANGLER" deploy --dry-run --outdir out 2>&1 | grep "Total Upload")
