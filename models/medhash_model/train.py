"""Training and evaluation of one run: a method (DaRF+SCH, a baseline or an ablation) on one
data set at one bit length and seed, in one harness (same backbone, schedule, augmentation and
batch for all). The checkpoint is chosen on `val` (val queries against the train codes); `db`
and `query` are touched only by the final evaluation."""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import losses
from .darf import ModelConfig, build
from .data import DataSet
from .metrics import evaluate

METHODS = {
    # name: (arch, loss, model overrides, loss options)
    "darf_sch": ("darf", "sch", {}, {}),
    "bottleneck_sch": ("bottleneck", "sch", {}, {}),
    "cls_tanh": ("bottleneck", "cls_tanh", {}, {}),
    "dpsh": ("bottleneck", "dpsh", {}, {}),
    "hashnet": ("bottleneck", "hashnet", {}, {}),
    "csq": ("bottleneck", "csq", {}, {}),
    "abl_labels_only": ("darf", "sch", {}, {"use_fingerprints": False}),
    "abl_no_fusion": ("darf", "sch", {"fusion": False}, {}),
    "abl_linear_head": ("darf", "sch", {"head": "linear"}, {}),
}


@dataclass
class TrainConfig:
    method: str = "darf_sch"
    bits: int = 32
    seed: int = 0
    epochs: int = 30
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    eval_every: int = 2
    fp_size: int = 16
    threads: int = 2
    max_steps_per_epoch: int = 0  # 0: full pass over train
    device: str = "cpu"
    model: dict = field(default_factory=dict)


def resolve_device(name: str) -> str:
    """`auto` is CUDA when this machine has it, else the CPU."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this machine's PyTorch sees no CUDA device")
    return name


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Batched RandomResizedCrop(scale 0.8-1, ratio 3/4-4/3) and horizontal flip. The random
    draws come from the CPU generator whatever the device, so a seed picks the same crops."""
    b = x.shape[0]
    area = torch.empty(b).uniform_(0.8, 1.0, generator=gen)
    logr = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)
    ratio = torch.exp(logr)
    sw = torch.sqrt(area * ratio).clamp(max=1.0)
    sh = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sw)
    ty = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sh)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sw * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = sh, ty
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def encode(model, x: np.ndarray, batch: int = 256) -> dict:
    model.eval()
    device = next(model.parameters()).device
    outs = {"u": [], "logits": [], "features": []}
    with torch.no_grad():
        for i in range(0, len(x), batch):
            o = model(torch.from_numpy(x[i:i + batch].astype(np.float32)).to(device))
            for k in outs:
                outs[k].append(o[k].cpu().numpy())
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in outs.items()}


def lr_at(step: int, total: int, warm: int, base: float) -> float:
    if step < warm:
        return base * (0.1 + 0.9 * step / max(warm, 1))
    p = (step - warm) / max(total - warm, 1)
    return 1e-5 + (base - 1e-5) * 0.5 * (1 + math.cos(math.pi * p))


def train(ds: DataSet, tc: TrainConfig, log=print, on_step=None) -> tuple[torch.nn.Module, dict]:
    """on_step(step, loss), when given, sees every step's loss (tests check that it falls)."""
    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    arch, loss_name, overrides, loss_opts = METHODS[tc.method]
    tr = ds.splits["train"]
    channels, size = tr.x.shape[1], tr.x.shape[2]
    cfg = ModelConfig(n_classes=len(ds.classes), bits=tc.bits, size=size, channels=channels, arch=arch,
                      **{**tc.model, **overrides})
    model = build(cfg).to(tc.device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    g = losses.class_weights(tr.y, cfg.n_classes).to(tc.device)
    centers = losses.hadamard_centers(cfg.n_classes, tc.bits, tc.seed).to(tc.device)
    gen = torch.Generator().manual_seed(tc.seed)
    n = len(tr.y)
    # a train split smaller than one batch (a small class folder) is one smaller batch per epoch:
    # n // batch alone made it 0 steps, and an untrained model was evaluated and saved
    steps_per_epoch = max(n // tc.batch, 1)
    if tc.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, tc.max_steps_per_epoch)
    total = steps_per_epoch * tc.epochs
    warm = int(tc.warmup_epochs * steps_per_epoch)
    best = {"val_map100": -1.0, "epoch": -1}
    best_state = None
    history = []
    step, t0 = 0, time.time()
    for epoch in range(tc.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen).numpy()
        running = []
        for bi in range(steps_per_epoch):
            idx = perm[bi * tc.batch:(bi + 1) * tc.batch]
            x = augment(torch.from_numpy(tr.x[idx].astype(np.float32)).to(tc.device), gen)
            y = torch.from_numpy(tr.y[idx]).to(tc.device)
            for pg in opt.param_groups:
                pg["lr"] = lr_at(step, total, warm, tc.lr)
            out = model(x)
            if loss_name == "sch":
                loss, parts = losses.sch_loss(out, y, x, g, tc.fp_size, **loss_opts)
            elif loss_name == "dpsh":
                loss, parts = losses.dpsh_loss(out, y)
            elif loss_name == "hashnet":
                loss, parts = losses.hashnet_loss(out, y, step)
            elif loss_name == "csq":
                loss, parts = losses.csq_loss(out, y, centers)
            else:
                loss, parts = losses.cls_tanh_loss(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            running.append(loss.item())
            if on_step is not None:
                on_step(step, running[-1])
            step += 1
        entry = {"epoch": epoch + 1, "loss": float(np.mean(running)), "s": round(time.time() - t0, 1)}
        if (epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs:
            val = validate(model, ds, tc.bits)
            entry["val_map100"] = val
            if val > best["val_map100"]:
                best = {"val_map100": val, "epoch": epoch + 1}
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        history.append(entry)
        log(json.dumps(entry))
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, {"config": cfg.to_dict(), "train": {**tc.__dict__}, "best": best, "history": history,
                   "train_seconds": round(time.time() - t0, 1)}


def validate(model, ds: DataSet, bits: int) -> float:
    """Model selection: val queries searching the train codes (db and query stay untouched)."""
    v, tr = ds.splits["val"], ds.splits["train"]
    qv, dbv = encode(model, v.x), encode(model, tr.x)
    return evaluate(qv["u"], v.y, dbv["u"], tr.y, bits)["map100"]


def test_eval(model, ds: DataSet, bits: int, rerank_weight: float = 0.0) -> tuple[dict, dict]:
    """Metrics of `query` against `db`, and the continuous codes they came from (for plots)."""
    q, db = ds.splits["query"], ds.splits["db"]
    eq, edb = encode(model, q.x), encode(model, db.x)
    res = evaluate(eq["u"], q.y, edb["u"], db.y, bits, q_desc=eq["u"], db_desc=edb["u"],
                   rerank_weight=rerank_weight, per_query=True)
    return res, {"db_u": edb["u"], "db_y": db.y, "q_u": eq["u"], "q_y": q.y}
