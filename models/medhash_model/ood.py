"""Out-of-distribution stage. (a) A reconstruction decoder trained on the frozen encoder's raw
deep map (the method's second stage): score = mean squared reconstruction error. (b) A feature
score: Mahalanobis distance of the fused features to the nearest class mean (shared, shrunk
covariance from `train`). Both are z-normalised on `val` (in-distribution) and combined as their
maximum; the threshold is the `val` quantile that keeps the chosen in-distribution recall.
MSP, energy and k-NN scores are computed here too, as baselines on the same features."""
from __future__ import annotations

import json
import os
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


class OODHead(nn.Module):
    """Scores of one batch: reconstruction error, Mahalanobis, and their combined z-max."""

    def __init__(self, decoder: Decoder, maha: Mahalanobis, norm: dict):
        super().__init__()
        self.decoder, self.maha = decoder, maha
        self.register_buffer("mean", torch.tensor([norm["recon"][0], norm["maha"][0]], dtype=torch.float32))
        self.register_buffer("std", torch.tensor([norm["recon"][1], norm["maha"][1]], dtype=torch.float32))

    def forward(self, x, deep, feats):
        r = recon_error(self.decoder, deep, x)
        m = self.maha(feats)
        z = (torch.stack([r, m], dim=1) - self.mean) / self.std
        return r, m, z.max(dim=1).values


def scores_np(model, head_parts, x: np.ndarray, batch: int = 256) -> dict:
    dec, maha, head = head_parts
    out = {"recon": [], "maha": [], "combined": [], "msp": [], "energy": [], "features": [], "u": []}
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(x[i:i + batch].astype(np.float32))
            o = model(xb)
            out["recon"].append(recon_error(dec, o["deep"], xb).numpy())
            out["maha"].append(maha(o["features"]).numpy())
            if head is not None:
                out["combined"].append(head(xb, o["deep"], o["features"])[2].numpy())
            p = torch.softmax(o["logits"], 1)
            out["msp"].append(-p.max(1).values.numpy())          # higher = more OOD, for every score
            out["energy"].append(-torch.logsumexp(o["logits"], 1).numpy())
            out["features"].append(F.normalize(o["features"], dim=1).numpy())
            out["u"].append(o["u"].numpy())
    return {k: np.concatenate(v) if v else None for k, v in out.items()}


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


def fit(model, ds, id_recall: float = 0.95, log=print, epochs: int = 6, steps: int = 150) -> tuple[OODHead, dict]:
    tr, va = ds.splits["train"], ds.splits["val"]
    t0 = time.time()
    dec = train_decoder(model, tr.x, epochs=epochs, steps=steps, log=log)
    feats = encode(model, tr.x)["features"]
    maha = Mahalanobis.fit(feats, tr.y, len(ds.classes))
    val = scores_np(model, (dec, maha, None), va.x)
    norm = {"recon": [float(val["recon"].mean()), float(val["recon"].std() + 1e-12)],
            "maha": [float(val["maha"].mean()), float(val["maha"].std() + 1e-12)]}
    head = OODHead(dec, maha, norm)
    val = scores_np(model, (dec, maha, head), va.x)
    info = {"norm": norm, "id_recall": id_recall, "decoder_steps": epochs * steps, "seconds": round(time.time() - t0, 1),
            "thresholds": {k: calibrate(val[k], id_recall) for k in ("recon", "maha", "combined")}}
    return head, info


def add_parser(sub):
    p = sub.add_parser("ood", help="train the OOD stage of a run and save it beside the model")
    p.add_argument("--run", required=True, help="a run folder with model.pt")
    p.add_argument("--id-recall", type=float, default=0.95)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--steps", type=int, default=150, help="decoder steps per epoch (fewer on a busy CPU)")
    p.set_defaults(fn=cmd_ood)


def load_run(run: Path):
    """The trained encoder of a run folder, its checkpoint dict, and its OOD head when fitted."""
    from .darf import ModelConfig, build
    ck = torch.load(run / "model.pt")
    cfg = ModelConfig(**{**ck["config"], "widths": tuple(ck["config"]["widths"])})
    model = build(cfg)
    model.load_state_dict(ck["state"])
    model.eval()
    head = None
    if (run / "ood.pt").exists():
        o = torch.load(run / "ood.pt")
        st = o["state"]
        dec = Decoder(cfg.widths[3], cfg.channels, cfg.size)
        maha = Mahalanobis(st["maha.w"], st["maha.wmu"])
        head = OODHead(dec, maha, o["info"]["norm"])
        head.load_state_dict(st)
        head.eval()
    return model, ck, head


def run_data_path(ck) -> str:
    from .cli import ROOT
    # a git worktree does not sit beside ../shared, so MEDHASH_DATA may name the data folder
    root = Path(os.environ.get("MEDHASH_DATA", ROOT.parent / "shared" / "data"))
    return ck.get("data_path") or str(root / ck["data"])


def run_data(ck, size: int, channels: int):
    from . import data as data_mod
    return data_mod.load(run_data_path(ck), size, channels, classes=ck["classes"])


def fit_run(run: Path, id_recall: float = 0.95, epochs: int = 6, steps: int = 150) -> dict:
    """Fits the OOD stage of a run folder and saves ood.pt and ood.json beside its model
    (shared by the `ood` command and `export`, which needs the head)."""
    model, ck, _ = load_run(run)
    ds = run_data(ck, model.cfg.size, model.cfg.channels)
    head, info = fit(model, ds, id_recall, log=lambda s: print(s, file=sys.stderr), epochs=epochs, steps=steps)
    torch.save({"state": head.state_dict(), "info": info, "feat_dim": model.feat_dim}, run / "ood.pt")
    (run / "ood.json").write_text(json.dumps(info, indent=1))
    return info


def cmd_ood(args):
    torch.set_num_threads(2)
    print(json.dumps(fit_run(Path(args.run), args.id_recall, args.epochs, args.steps)))
