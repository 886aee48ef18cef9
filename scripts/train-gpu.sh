#!/usr/bin/env bash
# The GPU sweep behind docs/RESULTS-gpu.md: one data set at one preset, every method, every bit
# length and seed, as parallel training processes sharing one CUDA device, under a deadline (a
# lent GPU machine has minutes, not hours). Seed by seed, so that a stop still leaves whole seeds.
# METHODS (DaRF+SCH and the strongest baselines) run for every seed before MORE_METHODS start.
# Runs go to $RUNS/<set>/<run>/; at the end their metrics, per-query AP and 64-bit codes (what
# `report` needs; no checkpoints) are packed into $OUT/runs-gpu.tar.gz with the log.
#
#   DATA=../shared/data OUT=/tmp/out bash scripts/train-gpu.sh     (from the repository root)
#   (then: mkdir -p runs && tar -xzf /tmp/out/runs-gpu.tar.gz -C runs && cd models &&
#    /usr/bin/python3 -m medhash_model report --runs ../runs/gpu --tag gpu)
#
# docs/RESULTS-gpu.md came from two calls on an H200 (2026-11-27), each with only its data set
# beside the checkout: `SET=brain_tumor_mri` with the defaults (54 runs in 353 s), then
# `SET=kather_crc_2016 LAUNCH_UNTIL=230 HARD_STOP=330` (53 runs in 280 s; bottleneck_sch b16 s2
# missed the launch deadline; neither call reached its hard stop). Its `gpu128` tables came from
# two calls of a later session, again one per data set: `SET=<set> PRESET=gpu128 BITS=32
# PARALLEL=18 LAUNCH_UNTIL=120 HARD_STOP=400` (brain MRI: 18 runs in 270 s; Kather, with
# LAUNCH_UNTIL=100 HARD_STOP=340: 18 runs in 217 s).
# The Kather ablations (cpu128, 32 bits): `METHODS="abl_no_fusion abl_linear_head abl_labels_only"
# MORE_METHODS="" PARALLEL=9 LAUNCH_UNTIL=40 HARD_STOP=190` (9 runs in 104 s).
# Each call ran with `DATA=.gpu/data`: the data set was copied into `.gpu/data/<set>`, a folder
# that .git/info/exclude ignores and the call carried. A call takes at most 64 MiB with the
# checkout, so for its duration the tracked ONNX models, OOD sets and codes (about 47 MB that
# training does not read) were untracked (`git rm --cached`, plus exclude lines) and then
# restored with `git reset`.
#
# Settings (environment): DATA (the shared data folder), OUT, RUNS (default runs/gpu), PY
# (default python3), SET, PRESET, METHODS, MORE_METHODS, BITS, SEEDS, DEVICE (cuda|cpu), PARALLEL
# (processes at once), LAUNCH_UNTIL (no run starts after this many seconds), HARD_STOP (running
# ones are stopped then; a stopped run leaves no metrics.json and is not reported).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# paths are taken relative to where the script is called from, before it moves to models/
DATA=$(cd "${DATA:-$ROOT/../shared/data}" && pwd)
OUT=${OUT:?set OUT to the folder that receives runs-gpu.tar.gz}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT/models"
SET=${SET:-brain_tumor_mri}
PRESET=${PRESET:-cpu128}
METHODS=${METHODS:-darf_sch hashnet cls_tanh}
MORE_METHODS=${MORE_METHODS-csq dpsh bottleneck_sch}
BITS=${BITS:-64 32 16}
SEEDS=${SEEDS:-0 1 2}
DEVICE=${DEVICE:-cuda}
PARALLEL=${PARALLEL:-16}
LAUNCH_UNTIL=${LAUNCH_UNTIL:-300}
HARD_STOP=${HARD_STOP:-470}
RUNS=${RUNS:-$ROOT/runs/gpu}
PY=${PY:-python3}
export MEDHASH_CACHE=${MEDHASH_CACHE:-/tmp/medhash-cache} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$RUNS"
LOG="$OUT/train-gpu.log"
T0=$(date +%s)
{
  echo "== $(date -u +%FT%TZ) set=$SET preset=$PRESET device=$DEVICE parallel=$PARALLEL"
  $PY -c 'import torch, numpy, sys; print("torch", torch.__version__, "numpy", numpy.__version__, "python", sys.version.split()[0]);
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
try:
    import onnxruntime; print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
except ImportError: print("onnxruntime: not installed")'
  # preprocess once (all cores) before the parallel runs read the cache
  $PY -c 'import sys; from medhash_model.data import load; load(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))' \
    "$DATA/$SET" "$($PY -c "from medhash_model.presets import PRESETS; print(PRESETS['$PRESET']['size'])")" \
    "$([[ $SET == kather* ]] && echo 3 || echo 1)"
  echo "== preprocessed at +$(( $(date +%s) - T0 )) s"
} >>"$LOG" 2>&1

# Smoke: one epoch of each method on the device, so that a broken setup stops here, in seconds,
# and the log shows what one epoch costs.
SMOKE=$(mktemp -d)
pids=()
for m in $METHODS $MORE_METHODS; do
  $PY -m medhash_model train --data "$DATA/$SET" --preset "$PRESET" --method "$m" --bits 16 --seed 0 \
    --epochs 1 --device "$DEVICE" --threads 1 --out "$SMOKE" >/dev/null 2>"$SMOKE/$m.err" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
if (( failed )); then
  for m in $METHODS $MORE_METHODS; do tail -3 "$SMOKE/$m.err"; done | tee -a "$LOG"
  echo "smoke run failed: see above" | tee -a "$LOG"; exit 1
fi
for m in $METHODS $MORE_METHODS; do grep -h '"epoch"' "$SMOKE/$SET"/$m-*/log.txt | sed "s/^/smoke $m: /"; done >>"$LOG"
echo "== smoke passed at +$(( $(date +%s) - T0 )) s" >>"$LOG"
if [[ $DEVICE == cuda ]]; then
  nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv,noheader -l 30 >>"$LOG" 2>&1 &
  smi=$!
fi

one() {  # one run, unless the launch deadline has passed
  local method=$1 bits=$2 seed=$3
  if (( $(date +%s) - T0 > LAUNCH_UNTIL )); then echo "skip $method b$bits s$seed (deadline)"; return 0; fi
  $PY -m medhash_model train --data "$DATA/$SET" --preset "$PRESET" --method "$method" --bits "$bits" \
    --seed "$seed" --device "$DEVICE" --threads 1 --out "$RUNS" 2>"$RUNS/.$SET-$method-b$bits-s$seed.err" \
    || { echo "FAILED $method b$bits s$seed"; tail -5 "$RUNS/.$SET-$method-b$bits-s$seed.err"; }
}
export -f one
export T0 LAUNCH_UNTIL DATA SET PRESET DEVICE RUNS PY
JOBS=$(mktemp)
for group in "$METHODS" "$MORE_METHODS"; do
  for seed in $SEEDS; do for bits in $BITS; do for m in $group; do echo "$m $bits $seed"; done; done; done
done >"$JOBS"
# the runs get a process group of their own, so the hard stop ends them and nothing else
setsid xargs -P "$PARALLEL" -L 1 -a "$JOBS" bash -c 'one "$@"' _ >>"$LOG" 2>&1 &
sweep=$!
left=$(( HARD_STOP - ($(date +%s) - T0) ))
# the watchdog is a group of its own too, so that ending it also ends its sleep
setsid bash -c 'sleep "$1"; kill -TERM -- "-$2" 2>/dev/null' _ "$(( left > 0 ? left : 0 ))" "$sweep" >/dev/null 2>&1 &
watchdog=$!
wait "$sweep" || echo "== hard stop at +$(( $(date +%s) - T0 )) s" >>"$LOG"
kill -- "-$watchdog" 2>/dev/null || true
[[ -n ${smi:-} ]] && kill "$smi" 2>/dev/null || true
echo "== finished $(find "$RUNS/$SET" -name metrics.json | wc -l) runs at +$(( $(date +%s) - T0 )) s" >>"$LOG"
(cd "$RUNS/.." && find "$(basename "$RUNS")" \( -name metrics.json -o -name ap100_per_query.npy -o -name log.txt \
  -o -path '*-b64-*/codes.npz' \) -print0 | tar -czf "$OUT/runs-gpu.tar.gz" --null -T -)
cat "$LOG"
