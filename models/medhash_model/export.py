"""Export of a trained run: one ONNX graph (opset 17) holding the encoder and its OOD head, the
model card beside it (format "medhash-model-card" v1, docs/MODEL_CARD.md), and the golden file
(query images of the run's data set, their Python-preprocessed inputs and PyTorch outputs) that
test/parity.test.ts replays through onnxruntime-node and onnxruntime-web."""
from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from . import data as data_mod
from . import ood
from . import ood_eval
from .card import CARD_FORMAT, CARD_VERSION
from .metrics import pack_bits
from .preprocess import LUMA, PREPROCESS_VERSION, preprocess_bytes
from .train import encode

OPSET = 17
OUTPUTS = ("u", "logits", "features", "ood_recon", "ood_maha", "ood_stats", "ood_score")
MAX_BYTES = 20 * 1024 * 1024
N_GOLDEN = 4
GOLDEN_FORMAT, GOLDEN_VERSION = "medhash-golden", 1


class Served(nn.Module):
    """Encoder and OOD head as one graph, so the service makes one call per batch."""

    def __init__(self, model: nn.Module, head: ood.OODHead):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, image):
        o = self.model(image)
        s = self.head(image, o["shallow"], o["deep"], o["features"])
        return o["u"], o["logits"], o["features"], s["recon"], s["maha"], s["stats"], s["combined"]


def export_onnx(model: nn.Module, head: ood.OODHead, path: Path) -> onnx.ModelProto:
    """Writes the graph with a dynamic batch axis and checks it."""
    cfg = model.cfg
    served = Served(model, head).eval()
    # batch 2 at trace time: golden files use 4, so parity tests also prove the batch axis is dynamic
    dummy = torch.rand(2, cfg.channels, cfg.size, cfg.size)
    with torch.no_grad():
        # no constant folding: it would turn the OOD head's int8 matrices (ood.ClassMahalanobis)
        # back into float32 initializers; onnxruntime folds them in memory at load instead
        torch.onnx.export(served, (dummy,), str(path), opset_version=OPSET, input_names=["image"],
                          output_names=list(OUTPUTS), do_constant_folding=False,
                          dynamic_axes={"image": {0: "batch"}, **{k: {0: "batch"} for k in OUTPUTS}})
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    return proto


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def preprocess_spec(size: int, channels: int) -> dict:
    """preprocess.py's rule (contract v1) as fields, for readers that reimplement it."""
    return {
        "version": PREPROCESS_VERSION,
        "decode": "PNG or JPEG -> RGB uint8; alpha dropped, grey replicated, 16-bit grey scaled by its maximum to 0-255",
        "grey": {"applies": channels == 1, "rule": "luma in float64, before resizing", "weights": list(LUMA)},
        "resize": {"to": [size, size], "filter": "triangle (bilinear), support widened by the downscale factor",
                   "pixel_centres": "i + 0.5", "borders": "weights renormalised to sum 1", "separable": True,
                   "equivalent": "PIL Image.BILINEAR with antialiasing"},
        "scale": "divide by 255",
        "normalize": None,
        "output": "float32, channels first, values in [0, 1]",
    }


def knn_card_section(model: nn.Module, head: ood.OODHead, ck: dict) -> dict:
    """`ood.knn` and `ood.with_knn` of the card: the service's search-by-code score (k-th nearest
    Hamming distance to the `db` split, the index it is shipped with) calibrated on `val`, and
    whether adding it to the image score helps, decided like the head's parts: on `val` against
    the synthetic validation outliers (`with_knn.use`)."""
    ds = ood.run_data(ck, model.cfg.size, model.cfg.channels)
    db_codes = pack_bits(encode(model, ds.splits["db"].x)["u"])
    va = ds.splits["val"].x
    val = ood.scores_np(model, head, va)
    val_knn = ood_eval.kth_hamming(pack_bits(val["u"]), db_codes)
    section = ood_eval.knn_calibration(val_knn, val["combined"], len(db_codes))
    mean, std = section["knn"]["mean"], section["knn"]["std"]
    alone, added = [], []
    for x in ood.validation_outliers(model, va).values():
        o = ood.scores_np(model, head, x)
        o_knn = ood_eval.kth_hamming(pack_bits(o["u"]), db_codes)
        alone.append(ood.auroc(val["combined"], o["combined"]))
        added.append(ood.auroc(ood_eval.with_knn(val["combined"], val_knn, mean, std), ood_eval.with_knn(o["combined"], o_knn, mean, std)))
    section["with_knn"].update(use=bool(np.mean(added) > np.mean(alone)),
                               validation_auroc={"ood_score": float(np.mean(alone)), "with_knn": float(np.mean(added))})
    return section


def build_card(name: str, onnx_path: Path, model: nn.Module, ck: dict, metrics: dict, ood_info: dict, knn: dict) -> dict:
    cfg = model.cfg
    digest = sha256_file(onnx_path)
    return {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "name": name,
        "model_id": f"{name}@{digest[:12]}",
        "onnx": onnx_path.name,
        "sha256": digest,
        "opset": OPSET,
        "bits": cfg.bits,
        "input": {"name": "image", "size": cfg.size, "channels": cfg.channels, "layout": "NCHW", "dtype": "float32",
                  "preprocess": preprocess_spec(cfg.size, cfg.channels)},
        "outputs": {
            "u": {"shape": ["N", cfg.bits], "meaning": "continuous hash; the code is u > 0"},
            "logits": {"shape": ["N", cfg.n_classes], "meaning": "class logits, order of `classes`"},
            "features": {"shape": ["N", model.feat_dim], "meaning": "fused features [global | local | fused]"},
            "ood_recon": {"shape": ["N"], "meaning": "mean squared reconstruction error"},
            "ood_maha": {"shape": ["N"], "meaning": "Mahalanobis distance to the nearest class mean, per dimension"},
            "ood_stats": {"shape": ["N"], "meaning": "Mahalanobis distance of the feature-map statistics, per dimension"},
            "ood_score": {"shape": ["N"], "meaning": "combined OOD score; above ood.threshold: out of distribution"},
        },
        "descriptor": {"source": "u", "dims": cfg.bits, "quantization": "int8: round(127 * u / max|u|)"},
        "classes": list(ck["classes"]),
        "training": {"data": ck["data"], "split": "train", "selection": "val", "preset": ck.get("preset"),
                     "method": metrics["method"], "seed": metrics["seed"], "bits": metrics["bits"],
                     "command": metrics["command"]},
        "metrics": {**{k: metrics[k] for k in ("map100", "map1000", "p10", "map100_content", "precision_r2", "recall_r2")},
                    "protocol": "query vs db, tie-aware"},
        "ood": {"score": f"ood_score = {ood_info['rule']} of the val-z-scored parts " + ", ".join(ood_info["parts"]),
                "rule": ood_info["rule"], "parts": ood_info["parts"],
                "chosen_on": "val against outliers made from val: "
                             f"{', '.join(ood_info.get('validation_sets', ('jigsaw', 'smooth', 'shapes')))} (docs/OOD.md)",
                "threshold": ood_info["thresholds"]["combined"], "id_recall": ood_info["id_recall"],
                "calibrated_on": "val", "decoder_steps": ood_info.get("decoder_steps"), **knn},
    }


def golden_records(source: Path, labels_in: list[str]) -> list:
    """The first query image of each class in turn, so the few goldens span classes."""
    recs = [r for r in data_mod.records(source) if r.split == "query" and r.label in labels_in]
    picked, seen = [], set()
    for r in recs:
        if r.label not in seen:
            picked.append(r)
            seen.add(r.label)
    picked += [r for r in recs if r not in picked]
    return picked[:N_GOLDEN]


def build_golden(name: str, card: dict, model: nn.Module, head: ood.OODHead, source: Path) -> dict:
    cfg = model.cfg
    recs = golden_records(source, card["classes"])
    x = np.stack([preprocess_bytes(r.load(), cfg.size, cfg.channels) for r in recs]).astype(np.float32)
    with torch.no_grad():
        u, logits, *_, score = Served(model, head).eval()(torch.from_numpy(x))
    bits = pack_bits(u.numpy())
    items = [{"id": r.id, "label": r.label,
              "input": base64.b64encode(x[i].astype("<f4").tobytes()).decode(),
              "u": u[i].tolist(), "bits_hex": bits[i].tobytes().hex(),
              "logits": logits[i].tolist(), "ood_score": float(score[i])} for i, r in enumerate(recs)]
    return {"format": GOLDEN_FORMAT, "version": GOLDEN_VERSION, "model": name, "model_id": card["model_id"],
            "data": source.name, "split": "query", "input_shape": [cfg.channels, cfg.size, cfg.size],
            "input_encoding": "base64 of little-endian float32, CHW",
            "bits_order": "bit i = bit (7 - i % 8) of byte i / 8", "items": items}


def refuse_overwrite(name: str, out: Path, force: bool) -> None:
    """Refuses to replace model `name` in `out` (a shipped one, or another run's by that name)
    unless `force`: the collections indexed with it record its model_id, which new files would not match."""
    existing = [p for p in (out / f"{name}.onnx", out / f"{name}.card.json", out / "golden" / f"{name}.json") if p.exists()]
    if existing and not force:
        raise SystemExit(f"model {name} exists: {', '.join(map(str, existing))}; --force overwrites it, or give another --name")


def export_run(run: Path, name: str, out: Path, force: bool = False) -> dict:
    refuse_overwrite(name, out, force)
    if not (run / "metrics.json").exists():
        raise SystemExit(f"{run}: no metrics.json (training not finished)")
    if not (run / "ood.pt").exists():
        print(f"{run}: no OOD head yet, fitting it", file=sys.stderr)
        ood.fit_run(run)
    model, ck, head = ood.load_run(run)
    metrics = json.loads((run / "metrics.json").read_text())
    ood_info = json.loads((run / "ood.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / f"{name}.onnx"
    export_onnx(model, head, onnx_path)
    if onnx_path.stat().st_size > MAX_BYTES:
        raise SystemExit(f"{onnx_path}: {onnx_path.stat().st_size} bytes, over the 20 MB budget")
    card = build_card(name, onnx_path, model, ck, metrics, ood_info, knn_card_section(model, head, ck))
    (out / f"{name}.card.json").write_text(json.dumps(card, indent=1) + "\n")
    source = Path(ood.run_data_path(ck))
    golden = build_golden(name, card, model, head, source)
    (out / "golden").mkdir(exist_ok=True)
    (out / "golden" / f"{name}.json").write_text(json.dumps(golden) + "\n")
    return card


def add_parser(sub):
    p = sub.add_parser("export", help="ONNX (opset 17) + model card + golden file of a trained run")
    p.add_argument("--run", required=True, help="a run folder with model.pt and metrics.json")
    p.add_argument("--name", required=True, help="the model's name: files NAME.onnx, NAME.card.json")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1]), help="default: models/")
    p.add_argument("--force", action="store_true", help="overwrite model NAME when --out holds it")
    p.set_defaults(fn=cmd_export)


def cmd_export(args):
    torch.set_num_threads(2)
    card = export_run(Path(args.run), args.name, Path(args.out), args.force)
    print(json.dumps({k: card[k] for k in ("model_id", "onnx", "bits")}))
