"""Out-of-distribution stage. (a) A reconstruction decoder trained on the frozen encoder's raw
deep map (the method's second stage): score = mean squared reconstruction error. (b) A feature
score: Mahalanobis distance of the fused features to the nearest class mean (shared, shrunk
covariance from `train`). (c) A statistics score: Mahalanobis distance of the per-channel means
and deviations of the shallow and deep maps to the nearest of their `train` class means (shared
covariance, as Lee et al. 2018 fit every layer). (d, e) The same two distances with a covariance
per class (`qda`, `stats_qda`): one set's classes can differ in spread (MedNIST holds CT, MRI and
X-rays), and a shared covariance is too wide around a tight class. (f) A Gram score (`gram`): the
per-class Mahalanobis distance of the shallow map's channel correlations (the texture descriptor
of style transfer; Sastry and Oore 2020), on their leading principal components: how channels
fire together, which (c) leaves out. Each is z-normalised on `val` (in-distribution); the
combined score joins, by their max or their mean (`RULES`), the subset of them that separates
`val` from outliers made of `val` images best (never an evaluation set); the threshold is the `val`
quantile that keeps the chosen in-distribution recall. MSP, energy and k-NN scores are
computed here too, as baselines on the same features."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .train import encode


class Decoder(nn.Module):
    """Three conv-InstanceNorm-LeakyReLU blocks with bilinear upsampling, to the input size."""

    def __init__(self, c_in: int, channels: int, size: int, width: int = 64):
        super().__init__()
        self.size = size
        chans = [c_in, 2 * width, width, width // 2]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, 1, 1), nn.InstanceNorm2d(chans[i + 1]), nn.LeakyReLU(0.2))
            for i in range(3))
        self.out = nn.Conv2d(chans[-1], channels, 3, 1, 1)

    def forward(self, deep):
        x = deep
        for blk in self.blocks:
            x = blk(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return torch.sigmoid(self.out(x))


def recon_error(decoder: Decoder, deep: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (decoder(deep) - x).pow(2).mean(dim=(1, 2, 3))


def train_decoder(model, x_train: np.ndarray, epochs: int = 6, steps: int = 150, batch: int = 64, seed: int = 0, log=print) -> Decoder:
    torch.manual_seed(seed)
    cfg = model.cfg
    dec = Decoder(cfg.widths[3], cfg.channels, cfg.size)
    opt = torch.optim.AdamW(dec.parameters(), lr=2e-3)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    gen = np.random.RandomState(seed)
    total = epochs * steps
    for e in range(epochs):
        losses = []
        for s in range(steps):
            for pg in opt.param_groups:
                pg["lr"] = 2e-3 * 0.5 * (1 + np.cos(np.pi * (e * steps + s) / total))
            idx = gen.randint(0, len(x_train), batch)
            x = torch.from_numpy(x_train[idx].astype(np.float32))
            with torch.no_grad():
                deep = model(x)["deep"]
            loss = recon_error(dec, deep, x).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        log(json.dumps({"decoder_epoch": e + 1, "mse": float(np.mean(losses))}))
    dec.eval()
    return dec


class Mahalanobis(nn.Module):
    """min_c ||W (f - mu_c)||^2 with W^T W the shrunk inverse covariance: exportable as two
    matrix products."""

    def __init__(self, w: torch.Tensor, wmu: torch.Tensor):
        super().__init__()
        self.register_buffer("w", w)
        self.register_buffer("wmu", wmu)

    @classmethod
    def fit(cls, feats: np.ndarray, labels: np.ndarray, n_classes: int, shrink: float = 0.1) -> "Mahalanobis":
        f = feats.astype(np.float64)
        mus = np.stack([f[labels == c].mean(0) for c in range(n_classes)])
        centred = f - mus[labels]
        cov = centred.T @ centred / len(f)
        cov = (1 - shrink) * cov + shrink * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
        prec = np.linalg.inv(cov)
        w = np.linalg.cholesky(prec).T  # prec = w.T @ w
        return cls(torch.tensor(w, dtype=torch.float32), torch.tensor(mus @ w.T, dtype=torch.float32))

    def forward(self, f):
        g = f @ self.w.t()
        return (g[:, None, :] - self.wmu[None]).pow(2).sum(-1).min(dim=1).values / g.shape[1]


class ClassMahalanobis(nn.Module):
    """min_c ||W_c (f - mu_c)||^2: each class a Mahalanobis of its own (its own shrunk covariance),
    stacked so that the graph stays two batched matrix products. W_c is stored as int8 with one
    scale per row: in float32 the per-class matrices would double the model (MedNIST: 13 MB of
    25 MB, over the 20 MB budget). The class means are projected by the dequantized W, which
    is the matrix both PyTorch and ONNX Runtime compute with (an int8 cast and one product)."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, wmu: torch.Tensor):
        super().__init__()
        self.register_buffer("q", q)          # int8 [C, D, D]
        self.register_buffer("scale", scale)  # [C, D, 1]
        self.register_buffer("wmu", wmu)      # [C, D]

    @classmethod
    def fit(cls, feats: np.ndarray, labels: np.ndarray, n_classes: int, shrink: float = 0.1) -> "ClassMahalanobis":
        one = [Mahalanobis.fit(feats[labels == c], np.zeros(int((labels == c).sum()), dtype=np.int64), 1, shrink)
               for c in range(n_classes)]
        w = torch.stack([m.w for m in one])
        scale = w.abs().amax(dim=2, keepdim=True) / 127
        q = torch.round(w / scale).to(torch.int8)
        mus = np.stack([feats[labels == c].astype(np.float64).mean(0) for c in range(n_classes)])
        w_hat = (q.float() * scale).double().numpy()
        wmu = torch.tensor(np.einsum("cij,cj->ci", w_hat, mus), dtype=torch.float32)
        return cls(q, scale, wmu)

    def forward(self, f):
        w = self.q.float() * self.scale
        g = torch.matmul(f.unsqueeze(0), w.transpose(1, 2))  # [C, N, D]
        return (g - self.wmu[:, None, :]).pow(2).sum(-1).min(dim=0).values / g.shape[2]


class Gram(nn.Module):
    """Per-class Mahalanobis distance of the shallow map's channel correlations (`channel_correlations`)
    projected on their first `dims` principal components of `train`: all C(C-1)/2 of them (2016 at
    the cpu64 widths) would need 24 MB of int8 matrices for MedNIST's six classes."""

    def __init__(self, idx: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor, maha: ClassMahalanobis):
        super().__init__()
        self.register_buffer("idx", idx)      # long [P]: the upper triangle's positions in the flat C x C matrix
        self.register_buffer("mean", mean)    # [P]
        self.register_buffer("basis", basis)  # [P, dims]
        self.maha = maha

    @staticmethod
    def triu(channels: int) -> torch.Tensor:
        iu = torch.triu_indices(channels, channels, 1)
        return iu[0] * channels + iu[1]

    @classmethod
    def fit(cls, corr: np.ndarray, labels: np.ndarray, n_classes: int, channels: int, dims: int) -> "Gram":
        mean = corr.astype(np.float64).mean(0)
        basis = np.linalg.svd(corr - mean, full_matrices=False)[2][:dims].T
        proj = ((corr - mean) @ basis).astype(np.float32)
        return cls(cls.triu(channels), torch.tensor(mean, dtype=torch.float32), torch.tensor(basis, dtype=torch.float32),
                   ClassMahalanobis.fit(proj, labels, n_classes))

    def forward(self, shallow):
        r = channel_correlations(shallow).flatten(1).index_select(1, self.idx)
        return self.maha((r - self.mean) @ self.basis)


def channel_correlations(m: torch.Tensor) -> torch.Tensor:
    """Channel correlation matrices [N, C, C] of feature maps [N, C, H, W]: unchanged by each
    channel's scale and offset, which `feature_stats` measures already."""
    f = m.flatten(2)
    f = f - f.mean(2, keepdim=True)
    g = f @ f.transpose(1, 2)
    d = g.diagonal(dim1=1, dim2=2).clamp_min(1e-8).sqrt()
    return g / (d[:, :, None] * d[:, None, :])


PARTS = ("recon", "maha", "stats", "qda", "stats_qda", "gram")
PER_CLASS = ("qda", "stats_qda", "gram")
# ways to join the chosen parts' z-scores (parts x images -> images); validation chooses one with
# the parts. The max counts a part only when it alone is high; the mean lets parts that are each a
# little high add up
RULES = {"max": lambda z: z.max(0), "mean": lambda z: z.mean(0)}
# ood.pt layout; 1 had no feature-statistics part, 2 fitted it to one Gaussian, 3 had no per-class
# covariances, 4 no Gram part and no rule but the max
HEAD_FORMAT = 5
# principal components the Gram part keeps (of 2016 correlations at the cpu64 widths): 256 over 64
# on MedNIST's validation outliers (docs/OOD.md)
GRAM_DIMS = 256


def feature_stats(shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
    """Per-channel spatial mean and standard deviation of the shallow and deep maps (as in the
    multi-layer Mahalanobis detector of Lee et al. 2018): low-level image statistics such as
    sharpness, texture and contrast, which class-level features are built to ignore."""
    parts = []
    for m in (shallow, deep):
        mean = m.mean(dim=(2, 3))
        parts += [mean, ((m - mean[:, :, None, None]).pow(2).mean(dim=(2, 3)) + 1e-6).sqrt()]
    return torch.cat(parts, dim=1)


class OODHead(nn.Module):
    """Scores of one batch: each part it holds (reconstruction error; Mahalanobis of the fused
    features and of the feature statistics, with a shared covariance and, where given, with one
    per class; the Gram score, where given) and the combined score: the `rule` (max or mean) of
    the `val`-z-scored parts that the OOD validation chose (`select`). The per-class parts are
    optional: a shipped head keeps only those chosen, as each costs matrices per class in the
    model file."""

    def __init__(self, decoder: Decoder, maha: Mahalanobis, stats: Mahalanobis, qda: ClassMahalanobis | None,
                 stats_qda: ClassMahalanobis | None, norm: dict, parts=("maha",), gram: Gram | None = None,
                 rule: str = "max"):
        super().__init__()
        self.decoder, self.maha, self.stats, self.qda, self.stats_qda, self.gram = decoder, maha, stats, qda, stats_qda, gram
        self.present = tuple(p for p in PARTS if getattr(self, p, None) is not None or p == "recon")
        self.parts = tuple(parts)
        if not set(self.parts) <= set(self.present):
            raise ValueError(f"OOD head: parts {self.parts} not all among those it holds {self.present}")
        if rule not in RULES:
            raise ValueError(f"OOD head: rule {rule!r}, not one of {list(RULES)}")
        self.rule = rule
        self.register_buffer("mean", torch.tensor([norm[p][0] for p in self.present], dtype=torch.float32))
        self.register_buffer("std", torch.tensor([norm[p][1] for p in self.present], dtype=torch.float32))
        self.register_buffer("select", torch.tensor([self.present.index(p) for p in self.parts], dtype=torch.long))

    def forward(self, x, shallow, deep, feats) -> dict[str, torch.Tensor]:
        st = feature_stats(shallow, deep)
        s = {"recon": recon_error(self.decoder, deep, x), "maha": self.maha(feats), "stats": self.stats(st)}
        if self.qda is not None:
            s["qda"] = self.qda(feats)
        if self.stats_qda is not None:
            s["stats_qda"] = self.stats_qda(st)
        if self.gram is not None:
            s["gram"] = self.gram(shallow)
        z = (torch.stack([s[p] for p in self.present], dim=1) - self.mean) / self.std
        chosen = z.index_select(1, self.select)
        s["combined"] = chosen.max(dim=1).values if self.rule == "max" else chosen.mean(dim=1)
        return s


def scores_np(model, head: OODHead, x: np.ndarray, batch: int = 256) -> dict:
    out = {k: [] for k in (*head.present, "combined", "msp", "energy", "features", "u")}
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(x[i:i + batch].astype(np.float32))
            o = model(xb)
            for k, v in head(xb, o["shallow"], o["deep"], o["features"]).items():
                out[k].append(v.numpy())
            p = torch.softmax(o["logits"], 1)
            out["msp"].append(-p.max(1).values.numpy())          # higher = more OOD, for every score
            out["energy"].append(-torch.logsumexp(o["logits"], 1).numpy())
            out["features"].append(F.normalize(o["features"], dim=1).numpy())
            out["u"].append(o["u"].numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


# The threat model the gate is built for: L-inf perturbations of at most EPS per pixel (8/255, the
# common budget for 8-bit images). Validation attacks within it and so does ood_eval.
EPS = 8 / 255


def quantize(x: np.ndarray) -> np.ndarray:
    """What a PNG of the image holds: uint8 levels, back in [0, 1]. Scoring the quantized image
    makes Python and the ONNX replay see the same pixels."""
    return np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)


def pgd(x: np.ndarray, objective, steps: int, alpha: float, eps: float = EPS, start=None, batch: int = 64) -> np.ndarray:
    """L-inf projected gradient ascent, batch by batch: `objective(x0)`, given a clean batch,
    returns the loss to ascend as a function of the attacked batch; `start(x0)` gives the first
    point (default: x0). steps=1 and alpha=eps is FGSM."""
    out = []
    for i in range(0, len(x), batch):
        x0 = torch.from_numpy(x[i:i + batch].astype(np.float32))
        with torch.no_grad():
            loss = objective(x0)
        xa = x0.clone() if start is None else start(x0)
        for _ in range(steps):
            xa.requires_grad_(True)
            g, = torch.autograd.grad(loss(xa), xa)
            with torch.no_grad():
                xa = torch.min(torch.max(xa + alpha * g.sign(), x0 - eps), x0 + eps).clamp(0, 1)
        out.append(xa.detach().numpy())
    return np.concatenate(out)


def class_attack(model, x: np.ndarray, steps: int = 5, alpha: float = 2 / 255, eps: float = EPS) -> np.ndarray:
    """L-inf PGD against the class head: cross-entropy ascent away from the class the model
    predicts on the clean image, from the clean image. The validation kind of attack: it shares
    the threat model with the evaluated attacks (ood_eval.attack), not their target (the code)."""
    def objective(x0):
        pred = model(x0)["logits"].argmax(1)
        return lambda xa: F.cross_entropy(model(xa)["logits"], pred, reduction="sum")
    return pgd(x, objective, steps, alpha, eps)


def validation_outliers(model, x: np.ndarray, n: int = 500, seed: int = 0) -> dict[str, np.ndarray]:
    """OOD *validation* sets, made from `val` images only so that choosing the combination never
    sees an evaluation set; none is another data set or an evaluated corruption. jigsaw: 4x4 tiles
    of an image shuffled (local content kept, anatomy broken); smooth: random 6x6 fields upsampled
    (blobs with no texture); shapes: one to three filled ellipses of random intensity on black;
    attack: `class_attack` on the model (attacked queries are a kind the gate must flag, and only
    an attack shows which parts see one), saved as a PNG would hold it."""
    rng = np.random.RandomState(seed)
    xv = x[np.sort(rng.permutation(len(x))[:n])].astype(np.float32)
    b, c, size, _ = xv.shape
    g = 4
    t = size // g
    tiles = xv[:, :, :g * t, :g * t].reshape(b, c, g, t, g, t).transpose(0, 2, 4, 1, 3, 5).reshape(b, g * g, c, t, t)
    tiles = tiles[np.arange(b)[:, None], np.argsort(rng.rand(b, g * g), axis=1)]
    jigsaw = xv.copy()
    jigsaw[:, :, :g * t, :g * t] = tiles.reshape(b, g, g, c, t, t).transpose(0, 3, 1, 4, 2, 5).reshape(b, c, g * t, g * t)
    low = torch.from_numpy(rng.rand(b, c, 6, 6).astype(np.float32))
    smooth = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).numpy()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    shapes = np.zeros_like(xv)
    for i in range(b):
        for _ in range(rng.randint(1, 4)):
            cy, cx, ry, rx = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.35), rng.uniform(0.05, 0.35)
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            shapes[i][:, inside] = rng.uniform(0.2, 1.0, size=(c, 1))
    attack = quantize(class_attack(model, xv)).astype(np.float32) / 255
    return {"jigsaw": jigsaw, "smooth": smooth, "shapes": shapes, "attack": attack}


def choose_parts(val: dict, outliers: dict[str, dict], norm: dict, candidates=PARTS,
                 combine=RULES["max"]) -> tuple[tuple[str, ...], list[dict]]:
    """The non-empty subset of the candidate parts whose joined z-scores separate `val` from the
    validation outliers best (mean AUROC over the outlier sets); ties go to the smaller subset,
    then PARTS order. `combine` joins parts x images z-scores into one score per image (`RULES`;
    ood_frontier.py tries others)."""
    z = lambda s, p: (s[p] - norm[p][0]) / norm[p][1]
    subsets = [tuple(p for j, p in enumerate(candidates) if mask >> j & 1) for mask in range(1, 2 ** len(candidates))]
    subsets.sort(key=len)
    table = []
    for sub in subsets:
        combined = lambda s: combine(np.stack([z(s, p) for p in sub]))
        aurocs = {name: auroc(combined(val), combined(o)) for name, o in outliers.items()}
        table.append({"parts": list(sub), "auroc": aurocs, "mean_auroc": float(np.mean(list(aurocs.values())))})
    best = max(table, key=lambda r: r["mean_auroc"])  # max keeps the first of equals
    return tuple(best["parts"]), table


def choose(val: dict, outliers: dict[str, dict], norm: dict, candidates=PARTS) -> tuple[str, tuple[str, ...], list[dict]]:
    """The rule and the subset of parts (`choose_parts` under each of `RULES`) that separate `val`
    from the validation outliers best; ties go to the earlier rule. The table: every subset under
    every rule, each row with its `rule`."""
    best, table = None, []
    for rule, combine in RULES.items():
        parts, rows = choose_parts(val, outliers, norm, candidates, combine)
        table += [{"rule": rule, **r} for r in rows]
        mean = next(r["mean_auroc"] for r in rows if tuple(r["parts"]) == parts)
        if best is None or mean > best[2]:
            best = (rule, parts, mean)
    return best[0], best[1], table


def knn_score(feats: np.ndarray, bank: np.ndarray, k: int = 10) -> np.ndarray:
    """k-th nearest neighbour cosine distance to the train features (Sun et al. 2022)."""
    out = []
    for i in range(0, len(feats), 512):
        sims = feats[i:i + 512] @ bank.T
        out.append(1.0 - np.sort(sims, axis=1)[:, -k])
    return np.concatenate(out)


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """P(score_ood > score_id), ties counted half; OOD is the positive class."""
    s = np.concatenate([id_scores, ood_scores])
    ranks = np.empty(len(s))
    order = np.argsort(s, kind="mergesort")
    ranks[order] = np.arange(1, len(s) + 1)
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    n1, n0 = len(ood_scores), len(id_scores)
    return float((ranks[n0:].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def fpr_at_95_tpr(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """OOD positive: the share of in-distribution images flagged when 95 % of OOD images are."""
    thr = np.quantile(ood_scores, 0.05)
    return float((id_scores >= thr).mean())


def calibrate(val_scores: np.ndarray, id_recall: float) -> float:
    """Threshold keeping `id_recall` of in-distribution val images below it (not flagged)."""
    return float(np.quantile(val_scores, id_recall))


def per_class_budget(model, decoder: Decoder, shared: list[Mahalanobis]) -> int:
    """Bytes left for the per-class matrices under the model-file budget: the budget less the
    float32 tensors the graph holds anyway, less 1 MiB for the graph itself."""
    from .export import MAX_BYTES
    held = sum(t.numel() * t.element_size() for m in (model, decoder, *shared) for t in m.state_dict().values())
    return MAX_BYTES - held - (1 << 20)


def check_data(ds, where: str) -> None:
    """Refuses, naming the counts, a data set the OOD stage and the card's k-NN section cannot be
    fitted on: each class needs two train images (a covariance of its own; one image gives a
    singular one) and `db` at least k codes (the k-th nearest neighbour). `pipeline` asks before
    training, so a small class folder is not trained on for minutes and then ends in a traceback."""
    from .ood_eval import KNN_K
    tr = ds.splits["train"].y
    n = np.bincount(tr[tr >= 0], minlength=len(ds.classes))
    short = [f"{c!r} ({k})" for c, k in zip(ds.classes, n) if k < 2]
    if short:
        raise SystemExit(f"{where}: the OOD stage needs at least 2 train images per class; "
                         f"{', '.join(short)} {'has' if len(short) == 1 else 'have'} fewer: give them more images")
    if len(ds.splits["db"].y) < KNN_K:
        raise SystemExit(f"{where}: the OOD stage needs at least {KNN_K} db images (the k-NN score's "
                         f"{KNN_K}th neighbour); it has {len(ds.splits['db'].y)}: give it more images")


def fit(model, ds, id_recall: float = 0.95, log=print, epochs: int = 6, steps: int = 150,
        decoder: Decoder | None = None) -> tuple[OODHead, dict]:
    tr, va = ds.splits["train"], ds.splits["val"]
    t0 = time.time()
    dec = decoder if decoder is not None else train_decoder(model, tr.x, epochs=epochs, steps=steps, log=log)
    feats = encode(model, tr.x)["features"]
    maha = Mahalanobis.fit(feats, tr.y, len(ds.classes))
    sample = np.sort(np.random.RandomState(0).permutation(len(tr.x))[:10000])
    xs = tr.x[sample]
    # one pass over the sample for both map descriptors: the feature statistics and the shallow
    # map's channel correlations (the Gram part's input, upper triangles)
    idx = Gram.triu(model.cfg.widths[1])
    st, corr = [], []
    with torch.no_grad():
        for i in range(0, len(xs), 256):
            o = model(torch.from_numpy(xs[i:i + 256].astype(np.float32)))
            st.append(feature_stats(o["shallow"], o["deep"]).numpy())
            corr.append(channel_correlations(o["shallow"]).flatten(1)[:, idx].numpy())
    st, corr = np.concatenate(st), np.concatenate(corr)
    # class-conditional: the classes of one set can differ in contrast and texture (MedNIST holds
    # CT, MRI and X-rays), and one Gaussian around all of them also covers the space between
    stats = Mahalanobis.fit(st, tr.y[sample], len(ds.classes))
    # the per-class parts are candidates only where their int8 matrices (one byte per entry; the
    # Gram part's projection in float32) fit the model-file budget: many classes, or the wide
    # `full` preset, would overflow it
    n = len(ds.classes)
    n_corr = corr.shape[1]
    dims = min(GRAM_DIMS, n_corr)
    per_class = {"bytes": n * (feats.shape[1] ** 2 + st.shape[1] ** 2 + dims ** 2) + 4 * n_corr * (dims + 1),
                 "budget": per_class_budget(model, dec, [maha, stats])}
    per = dict.fromkeys(PER_CLASS)
    if per_class["bytes"] <= per_class["budget"]:
        per["qda"] = ClassMahalanobis.fit(feats, tr.y, n)
        per["stats_qda"] = ClassMahalanobis.fit(st, tr.y[sample], n)
        per["gram"] = Gram.fit(corr, tr.y[sample], n, model.cfg.widths[1], dims)
    else:
        log(json.dumps({"ood_per_class_parts": "left out: over the model-file budget", **per_class}))
    raw = OODHead(dec, maha, stats, per["qda"], per["stats_qda"], {p: [0.0, 1.0] for p in PARTS},
                  gram=per["gram"])  # the parts unscaled, to fit their z-scaling
    val = scores_np(model, raw, va.x)
    norm = {p: [float(val[p].mean()), float(val[p].std() + 1e-12)] for p in raw.present}
    outliers = {k: scores_np(model, raw, v) for k, v in validation_outliers(model, va.x).items()}
    rule, parts, table = choose(val, outliers, norm, raw.present)
    log(json.dumps({"ood_rule": rule, "ood_parts": parts}))
    kept = {p: m if p in parts else None for p, m in per.items()}
    head = OODHead(dec, maha, stats, kept["qda"], kept["stats_qda"], norm, parts, gram=kept["gram"], rule=rule)
    val = scores_np(model, head, va.x)
    info = {"format": HEAD_FORMAT, "norm": norm, "rule": rule, "parts": list(parts), "selection": table,
            "validation_sets": list(outliers), "id_recall": id_recall,
            "per_class": {**per_class, "candidates": per["qda"] is not None},
            "decoder_steps": epochs * steps, "seconds": round(time.time() - t0, 1),
            "thresholds": {k: calibrate(val[k], id_recall) for k in (*head.present, "combined")}}
    return head, info


def add_parser(sub):
    from .cli import int_in
    p = sub.add_parser("ood", help="train the OOD stage of a run and save it beside the model")
    p.add_argument("--run", required=True, help="a run folder with model.pt")
    p.add_argument("--id-recall", type=float, default=0.95)
    p.add_argument("--epochs", type=int_in(1), default=6)
    p.add_argument("--steps", type=int_in(1), default=150, help="decoder steps per epoch (fewer on a busy CPU)")
    p.add_argument("--reuse-decoder", action="store_true",
                   help="keep the decoder of the run's existing ood.pt, refit only the feature scores and the choice")
    p.set_defaults(fn=cmd_ood)


def load_run_encoder(run: Path):
    """The trained encoder of a run folder and its checkpoint dict."""
    from .darf import ModelConfig, build
    ck = torch.load(run / "model.pt")
    cfg = ModelConfig(**{**ck["config"], "widths": tuple(ck["config"]["widths"])})
    model = build(cfg)
    model.load_state_dict(ck["state"])
    model.eval()
    return model, ck


def load_run(run: Path):
    """The trained encoder of a run folder, its checkpoint dict, and its OOD head when fitted."""
    model, ck = load_run_encoder(run)
    cfg = model.cfg
    head = None
    if (run / "ood.pt").exists():
        o = torch.load(run / "ood.pt")
        if o["info"].get("format", 1) != HEAD_FORMAT:
            raise SystemExit(f"{run}/ood.pt: OOD head format {o['info'].get('format', 1)}, this code reads {HEAD_FORMAT}; "
                             f"refit it: `ood --run {run} --reuse-decoder`")
        head = head_from_state(o["state"], cfg, o["info"]["norm"], o["info"]["parts"], o["info"]["rule"])
    return model, ck, head


def head_from_state(st: dict, cfg, norm: dict, parts, rule: str) -> OODHead:
    """An OODHead from its state dict (ood.pt, or a shipped graph's `head.*` initializers): the
    per-class parts where the state holds them."""
    dec = Decoder(cfg.widths[3], cfg.channels, cfg.size)
    maha, stats = (Mahalanobis(st[f"{p}.w"], st[f"{p}.wmu"]) for p in ("maha", "stats"))
    qda, stats_qda = (ClassMahalanobis(st[f"{p}.q"], st[f"{p}.scale"], st[f"{p}.wmu"]) if f"{p}.q" in st else None
                      for p in ("qda", "stats_qda"))
    gram = (Gram(st["gram.idx"], st["gram.mean"], st["gram.basis"],
                 ClassMahalanobis(st["gram.maha.q"], st["gram.maha.scale"], st["gram.maha.wmu"])) if "gram.idx" in st else None)
    head = OODHead(dec, maha, stats, qda, stats_qda, norm, parts, gram=gram, rule=rule)
    head.load_state_dict(st)
    head.eval()
    return head


def run_data_path(ck) -> str:
    from .cli import data_root
    return ck.get("data_path") or str(data_root() / ck["data"])


def run_data(ck, size: int, channels: int):
    from . import data as data_mod
    return data_mod.known_only(data_mod.load(run_data_path(ck), size, channels, classes=ck["classes"]))


def fit_run(run: Path, id_recall: float = 0.95, epochs: int = 6, steps: int = 150, reuse_decoder: bool = False) -> dict:
    """Fits the OOD stage of a run folder and saves ood.pt and ood.json beside its model
    (shared by the `ood` command and `export`, which needs the head)."""
    model, ck = load_run_encoder(run)
    ds = run_data(ck, model.cfg.size, model.cfg.channels)
    check_data(ds, run_data_path(ck))
    dec = None
    if reuse_decoder:
        old = torch.load(run / "ood.pt")
        dec = Decoder(model.cfg.widths[3], model.cfg.channels, model.cfg.size)
        dec.load_state_dict({k[len("decoder."):]: v for k, v in old["state"].items() if k.startswith("decoder.")})
        dec.eval()
        steps, epochs = old["info"]["decoder_steps"], 1
    head, info = fit(model, ds, id_recall, log=lambda s: print(s, file=sys.stderr), epochs=epochs, steps=steps, decoder=dec)
    torch.save({"state": head.state_dict(), "info": info, "feat_dim": model.feat_dim}, run / "ood.pt")
    (run / "ood.json").write_text(json.dumps(info, indent=1))
    return info


def cmd_ood(args):
    torch.set_num_threads(2)
    print(json.dumps(fit_run(Path(args.run), args.id_recall, args.epochs, args.steps, args.reuse_decoder)))
