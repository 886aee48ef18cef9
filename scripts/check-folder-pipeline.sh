#!/usr/bin/env bash
# The issue-3 check "a class folder the training CLI has never seen trains, exports and evaluates
# end to end with the cpu128 preset", as a command (about 25 min on 2 cores; docs/RESULTS-TS.md).
# Lays brain_tumor_mri's images out as plain class folders (<class>/<Testing|Training>_<file>,
# never read in that form before), runs `pipeline --preset cpu128` on the folder, then evaluates
# the exported model through the TypeScript path on the same folder. The folder reader splits by
# the same md5 rule as ../shared/data, so `query` and `db` are the shared set's own.
# Everything goes under WORK (default /tmp/medhash-folder-check); nothing is written to models/.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/medhash-folder-check}
DATA=${MEDHASH_DATA:-$(pwd)/../shared/data}
mkdir -p "$WORK"
if [ ! -d "$WORK/mri_folder" ]; then
  /usr/bin/python3 - "$DATA/brain_tumor_mri/images.tar" "$WORK/mri_folder" <<'EOF'
import sys, tarfile
from pathlib import Path
out = Path(sys.argv[2])
with tarfile.open(sys.argv[1]) as tf:
    for m in tf.getmembers():
        if m.isfile():
            top, label, name = m.name.split("/")
            (out / label).mkdir(parents=True, exist_ok=True)
            (out / label / f"{top}_{name}").write_bytes(tf.extractfile(m).read())
EOF
fi
start=$(date +%s)
(cd models && OMP_NUM_THREADS=2 /usr/bin/python3 -m medhash_model pipeline --data "$WORK/mri_folder" --preset cpu128 \
  --name mri-folder-cpu128 --out "$WORK/runs" --models "$WORK/models" --force)
echo "pipeline: $(( $(date +%s) - start )) s" >&2
npm run -s eval:retrieval -- --model "$WORK/models/mri-folder-cpu128.onnx" --data "$WORK/mri_folder" --json
