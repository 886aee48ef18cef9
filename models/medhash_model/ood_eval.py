"""OOD evaluation of shipped models (`ood-eval`): how well each score separates a model's own
`query` images (in-distribution) from far OOD (Fashion-MNIST), near OOD (other modalities of
../shared/data), attacked (FGSM, PGD on the code) and corrupted (noise, blur, contrast
inversion) query images. OOD is the positive class. Every threshold comes from `val`.

It also writes the OOD query sets it made (attacked, corrupted, and samples of the sets the
service cannot read itself) as PNG tars with a manifest under models/oodsets/, so that
scripts/eval/ood.ts replays the same images through the ONNX model without PyTorch."""
from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import data as data_mod
from . import ood
from .ood import EPS, quantize
from .metrics import hamming, pack_bits
from .preprocess import preprocess_bytes
from .train import encode

PGD_STEPS, PGD_ALPHA = 10, 2 / 255
KNN_K = 10
ID_RECALL = 0.95
OODSET_FORMAT, OODSET_VERSION = "medhash-oodset", 1
RESULT_FORMAT, RESULT_VERSION = "medhash-ood-eval", 1
# Scores compared; all are "higher = more OOD".
SCORES = ("combined", "combined_knn", *ood.PARTS, "knn_hamming", "msp", "energy", "knn_features")
OURS = "combined"


# --- metrics ---------------------------------------------------------------------------------

def flagged(scores: np.ndarray, threshold: float) -> float:
    """Share of images whose score is above the threshold (flagged as out of distribution)."""
    return float((np.asarray(scores) > threshold).mean())


def tpr_at_fpr(id_scores: np.ndarray, ood_scores: np.ndarray, fpr: float) -> float:
    """A point of the ROC curve, like FPR95 threshold-free: the share of OOD images flagged at the
    strictest threshold that flags at most `fpr` of the in-distribution images."""
    ids = np.sort(np.asarray(id_scores))[::-1]
    allowed = int(np.floor(fpr * len(ids)))  # ID images that may score above the threshold
    thr = ids[allowed] if allowed < len(ids) else -np.inf
    return float((np.asarray(ood_scores) > thr).mean())


def set_metrics(id_scores: np.ndarray, ood_scores: np.ndarray, threshold: float, threshold97: float | None = None) -> dict:
    """`threshold` is the card's (95 % val recall); `threshold97` the 97 % val quantile, the
    operating point of the goal (<= 3 % in-distribution false alarms)."""
    out = {"auroc": ood.auroc(id_scores, ood_scores), "fpr95": ood.fpr_at_95_tpr(id_scores, ood_scores),
           "tpr_at_fpr3": tpr_at_fpr(id_scores, ood_scores, 0.03),
           "flagged_at_threshold": flagged(ood_scores, threshold), "id_false_alarm": flagged(id_scores, threshold)}
    if threshold97 is not None:
        out.update(flagged_at_val97=flagged(ood_scores, threshold97), id_false_alarm_at_val97=flagged(id_scores, threshold97))
    return out


def kth_hamming(codes: np.ndarray, index: np.ndarray, k: int = KNN_K, batch: int = 1024) -> np.ndarray:
    """Hamming distance of each packed code to its k-th nearest code of the index (the service's
    search-by-code score: it needs nothing but the index)."""
    out = []
    q_all, d = np.unpackbits(codes, axis=1), np.unpackbits(index, axis=1)
    for i in range(0, len(q_all), batch):
        dist = hamming(q_all[i:i + batch], d)
        out.append(np.partition(dist, k - 1, axis=1)[:, k - 1])
    return np.concatenate(out).astype(np.float64)


def with_knn(model_score: np.ndarray, knn: np.ndarray, mean: float, std: float) -> np.ndarray:
    """The search-by-image score when the k-NN part is used: max(model score, z-scored k-NN
    distance), as functions/safety/gate.ts computes it."""
    return np.maximum(model_score, (knn - mean) / std)


def knn_calibration(val_knn: np.ndarray, val_model: np.ndarray, index_size: int, k: int = KNN_K,
                    id_recall: float = ID_RECALL) -> dict:
    """The card's `ood.knn` and `ood.with_knn`: thresholds at `id_recall` of val, and the z-scaling
    that puts the k-NN distance on the model score's scale for their max. Distances shrink as an
    index grows, so the threshold holds for indexes of at least `index_size` items."""
    mean, std = float(val_knn.mean()), float(val_knn.std() + 1e-12)
    combined = with_knn(val_model, val_knn, mean, std)
    return {"knn": {"k": k, "index": "db", "index_size": int(index_size), "threshold": ood.calibrate(val_knn, id_recall), "mean": mean, "std": std,
                    "score": "Hamming distance of the code to its k-th nearest code in the index"},
            "with_knn": {"threshold": ood.calibrate(combined, id_recall),
                         "score": "max(ood_score, (knn - knn.mean) / knn.std)"}}


# --- perturbed query sets -------------------------------------------------------------------

def attack(model, x: np.ndarray, steps: int, alpha: float, eps: float = EPS, seed: int = 0) -> np.ndarray:
    """L-inf attack on the hash code: pushes every continuous code unit against the sign it has
    on the clean image (as many bits flipped as possible). steps=1, alpha=eps is FGSM; more
    steps from a random start is PGD."""
    gen = torch.Generator().manual_seed(seed)

    def objective(x0):
        s = torch.sign(model(x0)["u"])
        return lambda xa: -(torch.tanh(model(xa)["u"]) * s).sum()

    start = (lambda x0: (x0 + (torch.rand(x0.shape, generator=gen) * 2 - 1) * eps).clamp(0, 1)) if steps > 1 else None
    return ood.pgd(x, objective, steps, alpha, eps, start)


def gaussian_blur(x: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    r = int(np.ceil(3 * sigma))
    t = np.arange(-r, r + 1, dtype=np.float32)
    k1 = np.exp(-t ** 2 / (2 * sigma ** 2))
    k1 /= k1.sum()
    xt = torch.from_numpy(x.astype(np.float32))
    c = xt.shape[1]
    kx = torch.from_numpy(k1).view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = torch.from_numpy(k1).view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    y = F.conv2d(F.pad(xt, (r, r, 0, 0), mode="reflect"), kx, groups=c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), ky, groups=c)
    return y.numpy()


def perturbed_sets(model, x: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """uint8 (N, C, S, S) images of each attacked or corrupted version of `x`."""
    rng = np.random.RandomState(seed)
    return {
        "attack:fgsm": quantize(attack(model, x, 1, EPS)),
        "attack:pgd": quantize(attack(model, x, PGD_STEPS, PGD_ALPHA, seed=seed)),
        "corrupt:noise": quantize(x + rng.normal(0, 0.1, x.shape)),
        "corrupt:blur": quantize(gaussian_blur(x)),
        "corrupt:invert": quantize(1.0 - x),
    }


def png_bytes(img: np.ndarray) -> bytes:
    """(C, H, W) uint8 -> PNG (grey for C = 1, RGB for C = 3)."""
    arr = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def source_image(rgb: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 source image as (C, H, W) for png_bytes: grey when its channels agree."""
    chw = np.transpose(rgb, (2, 0, 1))
    return chw[:1] if (chw[0] == chw[1]).all() and (chw[0] == chw[2]).all() else chw


def write_oodset(folder: Path, name: str, images: list[bytes], meta: dict) -> dict:
    """`name`.tar of PNGs 000000.png... (plain tar, fixed mtimes: same bytes every run)."""
    folder.mkdir(parents=True, exist_ok=True)
    tar_path = folder / f"{name.replace(':', '-')}.tar"
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for i, b in enumerate(images):
            info = tarfile.TarInfo(f"{i:06d}.png")
            info.size, info.mtime, info.mode = len(b), 0, 0o644
            tf.addfile(info, io.BytesIO(b))
    return {"set": name, "file": tar_path.name, "count": len(images), **meta}


def check_oodset(manifest, where: Path) -> dict:
    """The manifest, or SystemExit naming the file and the first field read_oodset needs that is
    missing or of the wrong type (not a bare KeyError), in the words of the TypeScript reader,
    scripts/eval/oodset.ts."""
    m = manifest if isinstance(manifest, dict) else {}

    def refuse(problem: str):
        raise SystemExit(f"{where}: {problem}")

    def text(v, field: str):
        if not isinstance(v, str) or not v:
            refuse(f"{field} must be a non-empty string")

    if (m.get("format"), m.get("version")) != (OODSET_FORMAT, OODSET_VERSION):
        refuse(f"format {json.dumps(m.get('format'))} version {json.dumps(m.get('version'))} is not {OODSET_FORMAT} v{OODSET_VERSION}")
    # the TypeScript reader takes these two from the model card
    size, channels = m.get("size"), m.get("channels")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        refuse("size must be a positive integer")
    if channels not in (1, 3) or isinstance(channels, bool):
        refuse("channels must be 1 or 3")
    if not isinstance(m.get("sets"), list) or not m["sets"]:
        refuse("sets must be a non-empty list")
    for i, raw in enumerate(m["sets"]):
        e = raw if isinstance(raw, dict) else {}
        text(e.get("set"), f"sets[{i}].set")
        if "file" in e:
            text(e["file"], f"sets[{i}].file")
            continue
        text(e.get("source"), f"sets[{i}].source")
        if not isinstance(e.get("ids"), list) or not e["ids"] or not all(isinstance(x, str) for x in e["ids"]):
            refuse(f"sets[{i}].ids must be a non-empty list of strings")
    return m


def read_oodset(folder: Path, data_root: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(manifest, {set: images}) of a folder that `write_oodset` and `replay_entry` wrote, each
    set preprocessed at the manifest's size and channels, in manifest order."""
    where = folder / "manifest.json"
    manifest = check_oodset(json.loads(where.read_text()), where)
    size, channels = manifest["size"], manifest["channels"]
    sets = {}
    for k, entry in enumerate(manifest["sets"]):
        if "file" in entry:
            with tarfile.open(folder / entry["file"]) as tf:
                members = sorted((m for m in tf.getmembers() if m.isfile()), key=lambda m: m.name)
                sets[entry["set"]] = np.stack([preprocess_bytes(tf.extractfile(m).read(), size, channels) for m in members])
        else:
            ds = data_mod.load(data_root / entry["source"], size, channels)
            at = {i: (s, j) for s in data_mod.SPLITS for j, i in enumerate(ds.splits[s].ids)}
            unknown = [i for i in entry["ids"] if i not in at]
            if unknown:
                raise SystemExit(f"{where}: sets[{k}].ids: {len(unknown)} not images of {data_root / entry['source']}, "
                                 f"the first {unknown[0]!r}")
            sets[entry["set"]] = np.stack([ds.splits[at[i][0]].x[at[i][1]] for i in entry["ids"]])
        sets[entry["set"]] = sets[entry["set"]].astype(np.float32)
    return manifest, sets


def knn_bank(model, train_x: np.ndarray, seed: int = 0, n: int = 10000) -> np.ndarray:
    """The KNN baseline's reference set: L2-normalised fused features of n `train` images."""
    pick = np.sort(np.random.RandomState(seed).permutation(len(train_x))[:n])
    return F.normalize(torch.from_numpy(encode(model, train_x[pick])["features"]), dim=1).numpy()


# --- one model -------------------------------------------------------------------------------

def load_images(path: Path, size: int, channels: int, n: int, seed: int, split: str | None = None,
                labels: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """n images of a data set (all splits unless `split`; all labels unless `labels`),
    preprocessed, sampled reproducibly."""
    ds = data_mod.load(path, size, channels, classes=labels)
    if labels:
        ds = data_mod.known_only(ds)
    parts = [ds.splits[split]] if split else [ds.splits[s] for s in data_mod.SPLITS if len(ds.splits[s].ids)]
    x = np.concatenate([p.x for p in parts])
    ids = [i for p in parts for i in p.ids]
    pick = np.sort(np.random.RandomState(seed).permutation(len(ids))[:n])
    return x[pick].astype(np.float32), [ids[i] for i in pick]


def replay_entry(folder: Path, set_name: str, path: str, src: Path, ids: list[str]) -> dict:
    """The manifest entry by which the service replays an OOD set's images: a data set with
    images.tar by member path; any other (class folders, IDX, npz) as PNGs of its source pixels,
    written to `folder`, which the service preprocesses itself."""
    if (src / "images.tar").exists():
        return {"set": set_name, "source": path, "ids": ids}
    recs = {r.id: r for r in data_mod.records(src)}
    return write_oodset(folder, set_name, [png_bytes(source_image(data_mod.source_rgb(recs[i]))) for i in ids],
                        {"source": path, "ids": ids})


def evaluate_model(name: str, run: Path, data_root: Path, far: list[str], near: list[str], n_ood: int, n_perturb: int,
                   oodsets: Path | None, seed: int = 0, log=print) -> dict:
    t0 = time.time()
    model, ck, head = ood.load_run(run)
    head_info = json.loads((run / "ood.json").read_text()) if head is not None else {}
    if head is None:
        raise SystemExit(f"{run}: no ood.pt; fit the OOD stage first (`ood --run {run}`)")
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = model.cfg
    ds = ood.run_data(ck, cfg.size, cfg.channels)

    def score(x: np.ndarray) -> dict:
        s = ood.scores_np(model, head, x)
        s["codes"] = pack_bits(s.pop("u"))
        return s

    db = encode(model, ds.splits["db"].x)
    db_codes = pack_bits(db["u"])
    bank = knn_bank(model, ds.splits["train"].x, seed)

    def all_scores(x: np.ndarray) -> dict:
        s = score(x)
        out = {k: s[k] for k in ("combined", *head.present, "msp", "energy")}
        out["knn_hamming"] = kth_hamming(s["codes"], db_codes)
        out["knn_features"] = ood.knn_score(s["features"], bank)
        return out

    val = all_scores(ds.splits["val"].x)
    cal = knn_calibration(val["knn_hamming"], val["combined"], len(db_codes))
    z = lambda s: with_knn(s["combined"], s["knn_hamming"], cal["knn"]["mean"], cal["knn"]["std"])  # noqa: E731
    val["combined_knn"] = z(val)
    scores = [k for k in SCORES if k in val]  # the per-class parts only where the head holds them
    thresholds = {k: ood.calibrate(val[k], ID_RECALL) for k in scores}
    thresholds97 = {k: ood.calibrate(val[k], 0.97) for k in scores}
    log(json.dumps({"model": name, "stage": "val", "seconds": round(time.time() - t0, 1)}))

    q = ds.splits["query"]
    idq = all_scores(q.x)
    idq["combined_knn"] = z(idq)

    sets: dict[str, np.ndarray] = {}
    written: list[dict] = []
    folder = oodsets / name if oodsets else None
    for path in far + near:
        src = data_root / path
        x, ids = load_images(src, cfg.size, cfg.channels, n_ood, seed)
        kind = "far" if path in far else "near"
        sets[f"{kind}:{path}"] = x
        if folder:
            written.append(replay_entry(folder, f"{kind}:{path}", path, src, ids))
    if ck.get("holdout"):
        # near OOD of the closest kind: images of the model's own data set, of classes it never saw
        src = Path(ood.run_data_path(ck))
        x, ids = load_images(src, cfg.size, cfg.channels, n_ood, seed, labels=ck["holdout"])
        set_name = f"near:{src.name} held out ({', '.join(ck['holdout'])})"
        sets[set_name] = x
        if folder:
            written.append({"set": set_name, "source": src.name, "ids": ids})
    pick = np.sort(np.random.RandomState(seed + 1).permutation(len(q.ids))[:n_perturb])
    for set_name, imgs in perturbed_sets(model, q.x[pick].astype(np.float32), seed).items():
        sets[set_name] = imgs.astype(np.float32) / 255
        if folder:
            written.append(write_oodset(folder, set_name, [png_bytes(i) for i in imgs], {"source": f"{ds.name}:query", "ids": [q.ids[i] for i in pick]}))
    log(json.dumps({"model": name, "stage": "sets", "seconds": round(time.time() - t0, 1)}))

    rows = []
    for set_name, x in sets.items():
        s = all_scores(x)
        s["combined_knn"] = z(s)
        row = {"model": name, "ood_set": set_name, "n_id": len(q.ids), "n_ood": len(x),
               "scores": {k: set_metrics(idq[k], s[k], thresholds[k], thresholds97[k]) for k in scores}}
        rows.append(row)
        log(json.dumps({"model": name, "ood_set": set_name, **row["scores"][OURS]}))
    if folder:
        manifest = {"format": OODSET_FORMAT, "version": OODSET_VERSION, "model": name, "data": ds.name,
                    "size": cfg.size, "channels": cfg.channels, "sets": written}
        (folder / "manifest.json").write_text(json.dumps(manifest) + "\n")
    return {"model": name, "run": str(run), "data": ds.name, "thresholds": thresholds, "thresholds_val97": thresholds97, "calibration": cal,
            "card_threshold": head_info["thresholds"]["combined"], "decoder_steps": head_info.get("decoder_steps"),
            "rule": head_info["rule"], "parts": head_info["parts"], "selection": head_info["selection"],
            "seconds": round(time.time() - t0, 1), "sets": rows}


NEAR_DEFAULT = {
    "brain_tumor_mri": ["kather_crc_2016", "pneumoniamnist"],
    "kather_crc_2016": ["brain_tumor_mri", "pneumoniamnist"],
    "mednist": ["brain_tumor_mri", "kather_crc_2016"],
}


def add_parser(sub):
    p = sub.add_parser("ood-eval", help="OOD evaluation of exported models: AUROC, FPR95, flagged at the val threshold")
    p.add_argument("--model", action="append", default=[], metavar="NAME=RUN",
                   help="a model name (as in models/NAME.onnx) and its run folder; repeatable")
    p.add_argument("--data-root", default=None, help="default: $MEDHASH_DATA or ../shared/data")
    p.add_argument("--far", nargs="*", default=["fashion_mnist_test"])
    p.add_argument("--near", nargs="*", default=None, help="default: per data set, other modalities")
    p.add_argument("--n-ood", type=int, default=1000, help="images per far/near set")
    p.add_argument("--n-perturb", type=int, default=150, help="query images attacked and corrupted")
    p.add_argument("--oodsets", default=None, help="write the OOD sets here (e.g. models/oodsets)")
    p.add_argument("--json", default=None, help="write the results here (e.g. ../docs/results/ood.json)")
    p.add_argument("--table", action="store_true", help="print the --json file as Markdown tables (docs/OOD.md)")
    p.add_argument("--ts", default=None, help="with --table: compare with these `npm run eval:ood` lines (docs/results/ood-ts.jsonl)")
    p.set_defaults(fn=cmd_ood_eval)


LABELS = {"combined": "ours", "combined_knn": "ours + kNN-Hamming", "recon": "recon", "maha": "maha", "stats": "stats",
          "qda": "qda", "stats_qda": "stats_qda", "gram": "gram",
          "knn_hamming": "kNN-Hamming", "msp": "MSP", "energy": "energy", "knn_features": "KNN (features)"}


def markdown(doc: dict) -> str:
    """Per model: AUROC / FPR95 of every score per OOD set, then flagged and false alarms at the
    val thresholds for our scores."""
    out = []
    for m in doc["models"]:
        ours = m["parts"][0] if len(m["parts"]) == 1 else f"{m.get('rule', 'max')}({', '.join(m['parts'])})"
        out.append(f"### {m['model']} (ID: `{m['data']}` query, {m['sets'][0]['n_id']} images; ours = {ours}, chosen on val; "
                   f"{m.get('decoder_steps')} decoder steps; threshold {m['card_threshold']:.4f})\n")
        # heads before format 5 joined their parts by the max only, and their rows name no rule
        rows = [{"rule": "max", **r} for r in m["selection"]]
        chosen = lambda r: r["parts"] == m["parts"] and r["rule"] == m.get("rule", "max")  # noqa: E731
        shown = rows if len(rows) <= 10 else sorted(rows, key=lambda r: -r["mean_auroc"])[:10]
        shown += [r for r in rows if chosen(r) and r not in shown]
        out.append("The choice of `ours` on `val` (AUROC of each combination, `val` against outliers made from `val`; "
                   "the best mean wins" + ("" if len(shown) == len(rows) else f"; the 10 best of {len(rows)}") + "):\n")
        names = list(rows[0]["auroc"])
        out.append("| rule | parts | " + " | ".join(names) + " | mean |")
        out.append("|---|---|" + "---|" * (len(names) + 1))
        for r in shown:
            mark = "**" if chosen(r) else ""
            out.append(f"| {r['rule']} | {mark}{' + '.join(r['parts'])}{mark} | " + " | ".join(f"{r['auroc'][n]:.4f}" for n in names)
                       + f" | {mark}{r['mean_auroc']:.4f}{mark} |")
        # a model evaluated before a part existed (an older head format) has no column for it
        scores = [k for k in SCORES if k in m["sets"][0]["scores"]]
        out.append("\nAUROC / FPR95 (OOD positive):\n")
        out.append("| OOD set | n | " + " | ".join(LABELS[k] for k in scores) + " |")
        out.append("|---|---|" + "---|" * len(scores))
        for r in m["sets"]:
            cells = [f"{r['scores'][k]['auroc']:.3f} / {r['scores'][k]['fpr95']:.3f}" for k in scores]
            out.append(f"| {r['ood_set']} | {r['n_ood']} | " + " | ".join(cells) + " |")
        if "tpr_at_fpr3" in m["sets"][0]["scores"][OURS]:
            out.append("\nShare of the OOD set flagged at 3 % ID false alarms (a ROC point: the threshold is set on "
                       "`query` itself, like FPR95, so it measures the score, not a deployable threshold):\n")
            out.append("| OOD set | " + " | ".join(LABELS[k] for k in scores) + " |")
            out.append("|---|" + "---|" * len(scores))
            for r in m["sets"]:
                out.append(f"| {r['ood_set']} | " + " | ".join(f"{100 * r['scores'][k]['tpr_at_fpr3']:.1f} %" for k in scores) + " |")
        out.append("\nFlagged OOD / ID (`query`) false alarms at the val thresholds: 95 % val recall (the card's), "
                   "and 97 % val recall (the goal's <= 3 % false alarms), where measured:\n")
        keys = ("combined", "combined_knn", "knn_hamming")
        out.append("| OOD set | " + " | ".join(f"{LABELS[k]} @95 | {LABELS[k]} @97" for k in keys) + " |")
        out.append("|---|" + "---|" * (2 * len(keys)))
        pct = lambda x: f"{100 * x:.1f} %"
        for r in m["sets"]:
            cells = []
            for k in keys:
                sc = r["scores"][k]
                cells.append(f"{pct(sc['flagged_at_threshold'])} / {pct(sc['id_false_alarm'])}")
                cells.append(f"{pct(sc['flagged_at_val97'])} / {pct(sc['id_false_alarm_at_val97'])}" if "flagged_at_val97" in sc else "n/a")
            out.append(f"| {r['ood_set']} | " + " | ".join(cells) + " |")
        out.append(f"\nCommand: `{m['command']}`\n")
    return "\n".join(out)


def ts_markdown(doc: dict, ts_lines: list[dict]) -> str:
    """Python's figures for `ours` beside the TypeScript replay's (`npm run eval:ood` lines)."""
    ts = {(r["model"], r["ood_set"]): r for r in ts_lines}
    out = ["| model | OOD set | AUROC Python / TS | FPR95 Python / TS | flagged Python / TS | ID false alarms Python / TS |",
           "|---|---|---|---|---|---|"]
    pct = lambda x: f"{100 * x:.1f} %"
    for m in doc["models"]:
        for r in m["sets"]:
            t = ts.get((m["model"], r["ood_set"]))
            if t is None:
                continue
            p = r["scores"][OURS]
            out.append(f"| {m['model']} | {r['ood_set']} | {p['auroc']:.4f} / {t['auroc']:.4f} | {p['fpr95']:.4f} / {t['fpr95']:.4f} | "
                       f"{pct(p['flagged_at_threshold'])} / {pct(t['flagged_at_threshold'])} | {pct(p['id_false_alarm'])} / {pct(t['id_false_alarm'])} |")
    return "\n".join(out)


def cmd_ood_eval(args):
    from .cli import data_root
    if args.table:
        doc = json.loads(Path(args.json).read_text())
        if args.ts:
            print(ts_markdown(doc, [json.loads(line) for line in Path(args.ts).read_text().splitlines() if line.strip()]))
        else:
            print(markdown(doc))
        return
    if not args.model:
        raise SystemExit("ood-eval: name at least one --model NAME=RUN (or --table --json FILE)")
    torch.set_num_threads(int(os.environ.get("MEDHASH_THREADS", "2")))
    root = data_root(args.data_root)
    log = lambda s: print(s, file=sys.stderr, flush=True)
    results = []
    for spec in args.model:
        name, run = spec.split("=", 1)
        ck = torch.load(Path(run) / "model.pt")
        near = args.near if args.near is not None else NEAR_DEFAULT.get(Path(ood.run_data_path(ck)).name, [])
        results.append(evaluate_model(name, Path(run), root, args.far, near, args.n_ood, args.n_perturb,
                                      Path(args.oodsets) if args.oodsets else None, log=log))
    command = "cd models && python3 -m medhash_model " + " ".join(sys.argv[1:])
    if args.json:
        # One file for every model: a run for some models replaces their entries, keeps the rest.
        path = Path(args.json)
        doc = json.loads(path.read_text()) if path.exists() else {}
        if doc and (doc.get("format"), doc.get("version")) != (RESULT_FORMAT, RESULT_VERSION):
            raise SystemExit(f"{path}: not a {RESULT_FORMAT} v{RESULT_VERSION} file")
        names = {r["model"] for r in results}
        models = [m for m in doc.get("models", []) if m["model"] not in names] + [{**r, "command": command} for r in results]
        doc = {"format": RESULT_FORMAT, "version": RESULT_VERSION, "positive": "ood", "id_set": "query",
               "calibrated_on": "val", "id_recall": ID_RECALL, "models": sorted(models, key=lambda m: m["model"])}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
    for r in results:
        for row in r["sets"]:
            print(json.dumps({"eval": "ood", "model": r["model"], "ood_set": row["ood_set"], **row["scores"][OURS]}))
