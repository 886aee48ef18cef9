#!/usr/bin/env bash
# The int8 measurement behind docs/RESULTS-TS.md "int8 variants" (issue 3, item 6: an int8
# variant only if it keeps mAP@100 within 1 % of fp32). For each shipped 64-bit model: quantize
# it (models/medhash_model/quantize.py), then measure the variant through the TypeScript path as
# the fp32 models are measured: `eval:retrieval` (db/query mAP), `eval:ood` (the fp32 model's OOD
# sets and thresholds) and, for MedNIST, `bench:e2e` fp32 and int8 interleaved (fp32, int8, fp32,
# int8, same machine). About 15 minutes on 2 cores, the venv included. Writes into $OUT
# (default runs/int8, ignored by git): the variants and their cards, results.jsonl (every JSON
# line printed) and the venv.
#
#   bash scripts/int8.sh                      (from the repository root, after scripts/install.sh)
#   MODELS="brain_tumor_mri" BENCH=0 bash scripts/int8.sh
#
# Debian's PyTorch stack has no onnxruntime for Python, so this makes a venv beside the system
# packages with onnxruntime's quantization tools (which need numpy 2, which Debian's torch cannot
# load: quantize.py imports no torch).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(cd "${DATA:-$ROOT/../shared/data}" && pwd)
OUT=${OUT:-$ROOT/runs/int8}
MODELS=${MODELS:-mednist brain_tumor_mri kather_crc_2016}
BENCH=${BENCH:-1}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
VENV="$OUT/venv"
if [[ ! -x $VENV/bin/python ]]; then
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
  # pinned as measured; pip warns that the system's scipy wants numpy 1, which nothing here imports
  "$VENV/bin/pip" install -q onnxruntime==1.30.0 onnx==1.23.1 ml_dtypes==0.6.0 numpy==2.4.6 \
    protobuf==7.36.2 flatbuffers==25.12.19
fi
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
mkdir -p "$OUT/oodsets"
cd "$ROOT"
for set in $MODELS; do
  fp32="models/$set-darf-b64.onnx"
  echo "== $set: quantize" >&2
  (cd models && OMP_NUM_THREADS=2 "$VENV/bin/python" -m medhash_model.quantize --model "../$fp32" \
    --data "$DATA/$set" --out "$OUT") | tee -a "$RESULTS"
  int8="$OUT/$set-darf-b64-int8.onnx"
  echo "== $set: retrieval" >&2
  npm run -s eval:retrieval -- --model "$int8" --data "$DATA/$set" --json | tee -a "$RESULTS"
  # the fp32 model's OOD sets; its attacked images were crafted on the fp32 model (a transfer attack here)
  ln -sfn "$ROOT/models/oodsets/$set-darf-b64" "$OUT/oodsets/$set-darf-b64-int8"
  echo "== $set: OOD" >&2
  npm run -s eval:ood -- --model "$int8" --oodsets "$OUT/oodsets" --json | tee -a "$RESULTS"
done
if (( BENCH )) && [[ " $MODELS " == *" mednist "* ]]; then
  for model in models/mednist-darf-b64.onnx "$OUT/mednist-darf-b64-int8.onnx" \
               models/mednist-darf-b64.onnx "$OUT/mednist-darf-b64-int8.onnx"; do
    echo "== bench:e2e $model" >&2
    npm run -s bench:e2e -- --json --model "$model" | tee -a "$RESULTS"
  done
fi
echo "== wrote $RESULTS" >&2
