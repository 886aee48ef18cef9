#!/usr/bin/env bash
# The main job: install, start the inference backend (onnxruntime-node, CPU here, CUDA where
# present) and the Node service with search by image (local sqlite-backed KV under .medhash/),
# create a tenant, a key and a collection bound to the model, index the `db` split of MedNIST by
# encoding its images through the backend, answer a search by image for one `query`-split image
# of each class and report precision@10, search with a DICOM file (MedNIST only), then keep
# serving until Ctrl-C.
# Options (environment): MODEL (default models/mednist-darf-b64.onnx), DATA (a ../shared/data
# set, default ../shared/data/mednist) or IMAGES (a folder of <label>/<image> files instead),
# MAX_ITEMS (index only the first N images; default all: MedNIST's 11,645 db images take about
# a minute on a 2-core machine), PORT (default 8787), BACKEND_PORT
# (default 8788), ORT_THREADS (the backend's onnxruntime threads, default 1: fastest on a small
# machine shared with other work; raise it on a dedicated many-core one), MEDHASH_DATA_DIR (default .medhash/main), MAIN_EXIT=1 to stop after the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

PORT=${PORT:-8787}
BACKEND_PORT=${BACKEND_PORT:-8788}
MODEL=${MODEL:-models/mednist-darf-b64.onnx}
DATA=${DATA:-../shared/data/mednist}
MAX_ITEMS=${MAX_ITEMS:-all}
export MEDHASH_DATA_DIR=${MEDHASH_DATA_DIR:-.medhash/main}
export MEDHASH_URL="http://127.0.0.1:$PORT"
export MEDHASH_BACKEND_URL="http://127.0.0.1:$BACKEND_PORT"
[ -f "$MODEL" ] || { echo "main: $MODEL not found (export it: scripts/train-models.sh; or set MODEL and DATA)" >&2; exit 1; }
# Node 22 itself (not `npx node`, whose npm wrapper would survive a kill of the servers below).
NODE=$(npx node -e 'process.stdout.write(process.execPath)')
mkdir -p "$MEDHASH_DATA_DIR"
keyfile="$MEDHASH_DATA_DIR/operator.key"
[ -f "$keyfile" ] || "$NODE" -e "process.stdout.write('op_'+require('crypto').randomBytes(24).toString('base64url'))" > "$keyfile"
export MEDHASH_OPERATOR_KEY=$(cat "$keyfile")
medhash() { "$NODE" scripts/medhash.mjs "$@"; }
json() { "$NODE" -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s)$1))"; }
wait_up() {
  for _ in $(seq 1 120); do curl -fs "$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "main: $2 did not start" >&2; exit 1
}

# Something already answering on a port (a server left from an earlier run) would take the
# demo's requests while its own servers failed to bind: say so instead.
for url in "$MEDHASH_BACKEND_URL" "$MEDHASH_URL"; do
  if curl -fs "$url/healthz" >/dev/null 2>&1; then
    echo "main: $url already answers (a server left running?): stop it, or set PORT and BACKEND_PORT" >&2; exit 1
  fi
done

pids=()  # the two servers, as node processes (a shell function in the background would leave its node behind)
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
"$NODE" scripts/medhash.mjs backend --model "$MODEL" --port "$BACKEND_PORT" --threads "${ORT_THREADS:-1}" & pids+=($!)
wait_up "$MEDHASH_BACKEND_URL" "the inference backend"
# Its access log (one JSON line per request, docs/API.md) goes to a file, not over the demo.
"$NODE" scripts/medhash.mjs serve --port "$PORT" --model "$MODEL" --backend-url "$MEDHASH_BACKEND_URL" >>"$MEDHASH_DATA_DIR/access.log" & pids+=($!)
wait_up "$MEDHASH_URL" "the service"
model_id=$(curl -fs "$MEDHASH_BACKEND_URL/healthz" | json .model_id)
echo "== inference backend: $(curl -fs "$MEDHASH_BACKEND_URL/healthz")"
echo "== service: $MEDHASH_URL, access log in $MEDHASH_DATA_DIR/access.log"

tenant=$(medhash admin create-tenant --name "demo-$(date +%s)" | json .id)
export MEDHASH_API_KEY=$(medhash admin create-key --tenant "$tenant" --scopes search,ingest,admin 2>/dev/null | json .secret)
collection=images
medhash collection create --name "$collection" --bits 64 --descriptor-dims 64 --model-id "$model_id" >/dev/null
limit=(); [ "$MAX_ITEMS" = "all" ] || limit=(--max-items "$MAX_ITEMS")
if [ -n "${IMAGES:-}" ]; then
  medhash index --collection "$collection" --images "$IMAGES" "${limit[@]}"
else
  medhash index --collection "$collection" --data "$DATA" --split db "${limit[@]}"
fi

# One query image per class: from the data set's `query` split, or the first file of each
# class folder under IMAGES (which then is also indexed: its nearest hit is itself).
qdir=$(mktemp -d); trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$qdir"' EXIT
if [ -n "${IMAGES:-}" ]; then
  for d in "$IMAGES"/*/; do f=$(ls "$d" | head -n 1); [ -n "$f" ] && echo "$(basename "$d")/$f,$(basename "$d")"; done > "$qdir/list"
  src="$IMAGES"
else
  awk -F, 'NR > 1 && $3 == "query" && !seen[$2]++ { print $1 "," $2 }' "$DATA/manifest.csv" > "$qdir/list"
  cut -d, -f1 "$qdir/list" | tar -xf "$DATA/images.tar" -C "$qdir" -T -
  src="$qdir"
fi
echo "== search by image: one query image per class, top 10 each (label in brackets)"
hits=0; total=0
while IFS=, read -r path label; do
  echo "query $path [$label]"
  out=$(medhash search --collection "$collection" --image "$src/$path" --k 10)
  echo "$out"
  hits=$((hits + $(echo "$out" | grep -c "\[$label\]" || true))); total=$((total + 10))
done < "$qdir/list"
echo "== precision@10 over these queries: $hits/$total"
if [ -z "${IMAGES:-}" ] && [ "$(basename "$DATA")" = mednist ]; then
  # DICOM is read too: this test file holds the pixels of a MedNIST hand X-ray (docs/ENCODING.md)
  echo "== search by DICOM: test/fixtures/dicom/grey8-explicit.dcm [Hand], top 5"
  medhash search --collection "$collection" --image test/fixtures/dicom/grey8-explicit.dcm --k 5
fi

if [ "${MAIN_EXIT:-0}" = "1" ]; then exit 0; fi
echo "== serving on $MEDHASH_URL (API docs: $MEDHASH_URL/docs), inference backend on $MEDHASH_BACKEND_URL. Ctrl-C stops."
echo "   export MEDHASH_URL=$MEDHASH_URL MEDHASH_API_KEY=$MEDHASH_API_KEY"
wait
