"""`ood-probe`: a measured experiment on one run, not the shipped head. The shipped feature scores
(ood.Mahalanobis: `maha` on the fused features, `stats` on the feature-map statistics) share one
covariance across classes. Here each class also gets its own (`qda`, `stats_qda`: each class an
ood.Mahalanobis of its own, the nearest class by its own distance). All are fitted on the
10,000-image sample of `train` that ood.fit fits `stats` on (it fits `maha` on all of `train`;
on the MedNIST retrain both give the same validation AUROC to four decimals) and z-scored on
`val`. It prints and writes:
- the validation table: `val` against ood.validation_outliers, the criterion ood.choose_parts
  chooses by (nothing else is used to choose);
- once, for the record, the far, near, attacked and corrupted evaluation sets as ood-eval makes
  them (ID = `query`).
docs/OOD.md, "Class-conditional covariance (measured, not shipped)"."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from . import ood
from .ood_eval import NEAR_DEFAULT, load_images, perturbed_sets, tpr_at_fpr

# the shipped choices, then the candidates
COMBOS = (("maha",), ("maha", "stats"), ("qda",), ("stats_qda",), ("qda", "stats_qda"))


def gaussians(f: np.ndarray, y: np.ndarray, n_classes: int, per_class: bool) -> list[ood.Mahalanobis]:
    """The shipped score's fit (ood.Mahalanobis: class means, one covariance shared by the classes),
    or one per class: each class fitted alone, as a Mahalanobis of one class."""
    if not per_class:
        return [ood.Mahalanobis.fit(f, y, n_classes)]
    return [ood.Mahalanobis.fit(f[y == c], np.zeros(int((y == c).sum()), dtype=np.int64), 1) for c in range(n_classes)]


def distance(f: np.ndarray, fits: list[ood.Mahalanobis]) -> np.ndarray:
    """Mahalanobis distance to the nearest class, per dimension, as the shipped head computes it."""
    x = torch.from_numpy(f.astype(np.float32))
    with torch.no_grad():
        return torch.stack([m(x) for m in fits], dim=1).min(dim=1).values.numpy()


def probe(run: Path, data_root: Path | None = None, n_ood: int = 500, n_perturb: int = 100, seed: int = 0, log=print) -> dict:
    model, ck = ood.load_run_encoder(run)
    data_root = data_root or Path(ood.run_data_path(ck)).parent
    ds = ood.run_data(ck, model.cfg.size, model.cfg.channels)
    tr, va, q = ds.splits["train"], ds.splits["val"], ds.splits["query"]
    n = len(ds.classes)

    def features(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fused, stats = [], []
        with torch.no_grad():
            for i in range(0, len(x), 256):
                o = model(torch.from_numpy(x[i:i + 256].astype(np.float32)))
                fused.append(o["features"].numpy())
                stats.append(ood.feature_stats(o["shallow"], o["deep"]).numpy())
        return np.concatenate(fused), np.concatenate(stats)

    sample = np.sort(np.random.RandomState(0).permutation(len(tr.x))[:10000])
    ftr, str_ = features(tr.x[sample])
    ytr = tr.y[sample]
    fits = {"maha": (0, gaussians(ftr, ytr, n, False)), "stats": (1, gaussians(str_, ytr, n, False)),
            "qda": (0, gaussians(ftr, ytr, n, True)), "stats_qda": (1, gaussians(str_, ytr, n, True))}

    def scores(x: np.ndarray) -> dict:
        pair = features(x)
        return {k: distance(pair[i], g) for k, (i, g) in fits.items()}

    val = scores(va.x)
    norm = {k: (float(v.mean()), float(v.std() + 1e-12)) for k, v in val.items()}

    def combined(s: dict, combo: tuple[str, ...]) -> np.ndarray:
        return np.max(np.stack([(s[k] - norm[k][0]) / norm[k][1] for k in combo]), axis=0)

    out: dict = {"run": str(run), "validation": [], "evaluation": {}}
    outliers = {k: scores(v) for k, v in ood.validation_outliers(va.x).items()}
    for combo in COMBOS:
        a = {k: ood.auroc(combined(val, combo), combined(o, combo)) for k, o in outliers.items()}
        out["validation"].append({"parts": list(combo), "auroc": a, "mean_auroc": float(np.mean(list(a.values())))})
        log(json.dumps(out["validation"][-1]))
    idq = scores(q.x)
    sets = {"far:fashion_mnist_test": "fashion_mnist_test", **{f"near:{p}": p for p in NEAR_DEFAULT.get(Path(ood.run_data_path(ck)).name, [])}}
    images = {name: load_images(data_root / path, model.cfg.size, model.cfg.channels, n_ood, seed)[0] for name, path in sets.items()}
    # attacked and corrupted `query` images, the same ones ood-eval makes
    for p in model.parameters():
        p.requires_grad_(False)
    pick = np.sort(np.random.RandomState(seed + 1).permutation(len(q.ids))[:n_perturb])
    images.update({k: v.astype(np.float32) / 255 for k, v in perturbed_sets(model, q.x[pick].astype(np.float32), seed).items()})
    for name, x in images.items():
        s = scores(x)
        for combo in COMBOS:
            thr = float(np.quantile(combined(val, combo), 0.95))
            i, o = combined(idq, combo), combined(s, combo)
            r = {"auroc": ood.auroc(i, o), "tpr_at_fpr3": tpr_at_fpr(i, o, 0.03),
                 "flagged_at_val95": float((o > thr).mean()), "id_false_alarm": float((i > thr).mean())}
            out["evaluation"].setdefault(name, {})["+".join(combo)] = r
            log(json.dumps({"set": name, "parts": list(combo), **r}))
    return out


def add_parser(sub):
    p = sub.add_parser("ood-probe", help="experiment: class-conditional covariance for the feature OOD scores of a run")
    p.add_argument("--run", required=True, help="a run folder with model.pt")
    p.add_argument("--data-root", default=None, help="default: ../shared/data (MEDHASH_DATA)")
    p.add_argument("--n-ood", type=int, default=500)
    p.add_argument("--n-perturb", type=int, default=100)
    p.add_argument("--json", required=True, help="where the result is written")
    p.set_defaults(fn=cmd_probe)


def cmd_probe(args):
    torch.set_num_threads(2)
    out = probe(Path(args.run), Path(args.data_root) if args.data_root else None, args.n_ood, args.n_perturb)
    Path(args.json).write_text(json.dumps(out, indent=1))
