#!/usr/bin/env bash
# The main job on embedded defaults: install, start the Node service (local sqlite-backed KV under
# .medhash/), create a tenant, a key and a collection, index the `db` split of brain_tumor_mri as
# encoded by the shipped 64-bit DaRF+SCH model (models/codes/), answer a few `query`-split look-ups
# and report their precision, then keep serving until Ctrl-C.
# Options: PORT (default 8787), MEDHASH_DATA_DIR (default .medhash/main), CODES (db codes file),
# QUERIES (query codes file), MAIN_EXIT=1 to stop after the demo instead of serving.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

PORT=${PORT:-8787}
export MEDHASH_DATA_DIR=${MEDHASH_DATA_DIR:-.medhash/main}
CODES=${CODES:-models/codes/brain_tumor_mri-darf-b64.db.jsonl}
QUERIES=${QUERIES:-models/codes/brain_tumor_mri-darf-b64.query.jsonl}
export MEDHASH_URL="http://127.0.0.1:$PORT"
mkdir -p "$MEDHASH_DATA_DIR"
keyfile="$MEDHASH_DATA_DIR/operator.key"
[ -f "$keyfile" ] || npx node -e "process.stdout.write('op_'+require('crypto').randomBytes(24).toString('base64url'))" > "$keyfile"
export MEDHASH_OPERATOR_KEY=$(cat "$keyfile")
medhash() { npx node scripts/medhash.mjs "$@"; }

medhash serve --port "$PORT" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  curl -fs "$MEDHASH_URL/healthz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fs "$MEDHASH_URL/healthz" >/dev/null || { echo "main: the service did not start" >&2; exit 1; }

json() { npx node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s)$1))"; }
tenant=$(medhash admin create-tenant --name "demo-$(date +%s)" | json .id)
export MEDHASH_API_KEY=$(medhash admin create-key --tenant "$tenant" --scopes search,ingest,admin 2>/dev/null | json .secret)
medhash collection create --name brain --bits 64 >/dev/null
medhash index --collection brain --codes "$CODES"

echo "== search: 5 query-split images, top 10 each (label in brackets)"
hits=0; total=0
while IFS= read -r line; do
  id=$(echo "$line" | json .id); code=$(echo "$line" | json .code); label=$(echo "$line" | json .metadata.label)
  echo "query $id [$label]"
  out=$(medhash search --collection brain --code "$code" --k 10)
  echo "$out"
  hits=$((hits + $(echo "$out" | grep -c "\[$label\]" || true))); total=$((total + 10))
done < <(head -n 5 "$QUERIES")
echo "== precision@10 over these queries: $hits/$total"

if [ "${MAIN_EXIT:-0}" = "1" ]; then exit 0; fi
echo "== serving on $MEDHASH_URL (API docs: $MEDHASH_URL/docs). Ctrl-C stops."
echo "   export MEDHASH_URL=$MEDHASH_URL MEDHASH_API_KEY=$MEDHASH_API_KEY"
wait $server
