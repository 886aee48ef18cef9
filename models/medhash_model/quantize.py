"""int8 variant of an exported model (issue 3, item 6: "only if it keeps mAP@100 within 1 % of
fp32"), for measurement: static QDQ quantization of the convolutions (int8 weights per output
channel, in 7 bits, uint8 activations), calibrated on `train` images of the model's own data set.
7-bit weights (`reduce_range`) because x86 CPUs without VNNI (AVX2 only, e.g. AMD Zen 3) sum
uint8 x int8 products in saturating int16: with full-range weights the same model gave 6 % OOD
false alarms on an AVX-512 VNNI machine and 50 % on an AVX2 one (docs/RESULTS-TS.md).

Run with a Python that has onnxruntime (Debian's has none; scripts/int8.sh makes a venv):
  python -m medhash_model.quantize --model models/NAME.onnx --data ../shared/data/SET --out DIR
writes DIR/NAME-int8.onnx and DIR/NAME-int8.card.json. The card is the fp32 card with the new
file, hash, model id and a `quantization` section; its metrics and OOD thresholds are still the
fp32 model's (the section says so), which is why the variant is measured, not shipped.

No torch here: this module runs beside a numpy that Debian's torch cannot load."""
from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from . import data as data_mod
from .card import card_beside, check_onnx, read_card

# Conv takes the largest share of the encoder's time (a one-off ORT profile, not recorded: about a
# third of each image); quantizing the attention's MatMuls as well (dynamic) gained nothing in a
# one-off timing on random inputs.
OPS = ["Conv"]


def calibration_batches(source: str, size: int, channels: int, n: int, seed: int, batch: int = 32):
    ds = data_mod.load(source, size, channels)
    tr = ds.splits["train"]
    idx = np.sort(np.random.default_rng(seed).choice(len(tr.y), min(n, len(tr.y)), replace=False))
    x = tr.x[idx].astype(np.float32)
    return [x[i:i + batch] for i in range(0, len(x), batch)]


def quantize(model: Path, source: str, out: Path, n: int = 256, seed: int = 0) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    card = read_card(card_beside(model))
    check_onnx(card, model)
    inp = card["input"]
    batches = calibration_batches(source, inp["size"], inp["channels"], n, seed)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({inp["name"]: b} for b in batches)

        def get_next(self):
            return next(self.it, None)

    name = f"{card['name']}-int8"
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / f"{name}.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # symbolic shape inference runs through the system's sympy/mpmath, which fail on numpy 2's
        # scalars; ONNX's own shape inference is enough for a graph whose only free axis is the batch
        quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(onnx_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, op_types_to_quantize=OPS, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    source_id = card["model_id"]
    card.update(name=name, model_id=f"{name}@{sha[:12]}", onnx=onnx_path.name, sha256=sha)
    card["quantization"] = {
        "format": "QDQ", "ops": OPS, "weights": "int8 in 7 bits (reduce_range), per output channel", "activations": "uint8",
        "calibration": f"{sum(len(b) for b in batches)} train images, seed {seed}, min-max",
        "from": source_id,
        "not_recalibrated": "metrics and ood are the fp32 model's; measure with npm run eval:retrieval / eval:ood"}
    (out / f"{name}.card.json").write_text(json.dumps(card, indent=1) + "\n")
    return card


def main():
    p = argparse.ArgumentParser(prog="python -m medhash_model.quantize", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an exported models/NAME.onnx with its card beside it")
    p.add_argument("--data", required=True, help="the model's data set (its train split calibrates)")
    p.add_argument("--out", required=True, help="folder for NAME-int8.onnx and its card")
    p.add_argument("--calib", type=int, default=256, help="calibration images from train")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise SystemExit("needs onnxruntime in this Python (bash scripts/int8.sh makes a venv with it)")
    card = quantize(Path(a.model), a.data, Path(a.out), a.calib, a.seed)
    print(json.dumps({k: card[k] for k in ("model_id", "onnx", "sha256")}))


if __name__ == "__main__":
    main()
