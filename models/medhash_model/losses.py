"""Training objectives. SCH (structure-aware contrastive hashing) as the method intends it, with
the released code's bugs fixed (fingerprints are passed in; the quantization term has a real
gradient), and the baselines' objectives (DPSH, HashNet, CSQ, classifier with tanh bottleneck)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-6


def fingerprints(x: torch.Tensor, size: int = 16) -> torch.Tensor:
    """Small thumbnails of the (augmented) inputs, flattened: the image fingerprints."""
    return F.adaptive_avg_pool2d(x, size).flatten(1)


def fingerprint_similarity(fp: torch.Tensor) -> torch.Tensor:
    """S_ij: cosine similarity of fingerprints; pixels are >= 0, so S lies in [0, 1]."""
    f = F.normalize(fp, dim=1)
    return (f @ f.t()).clamp(0.0, 1.0)


def pearson(u: torch.Tensor) -> torch.Tensor:
    z = u - u.mean(dim=1, keepdim=True)
    z = z / (z.norm(dim=1, keepdim=True) + EPS)
    return z @ z.t()


def class_weights(labels, n_classes: int) -> torch.Tensor:
    """g_c = N / (K n_c) from the training split (inverse frequency)."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=n_classes).float().clamp(min=1)
    return counts.sum() / (n_classes * counts)


def quantization(u: torch.Tensor) -> torch.Tensor:
    """Pulls |u| towards 1 (log cosh: quadratic near 1, linear far away)."""
    r = u.abs() - 1.0
    return (r.abs() + F.softplus(-2.0 * r.abs()) - math.log(2.0)).mean()


def sch_contrastive(u, y, S, g=None, use_fingerprints: bool = True) -> torch.Tensor:
    """L_con = mean_ij w_ij [ -y_ij S_ij log(1 - d_ij) - (1 - y_ij) exp(S_ij) log(d_ij) ] over i != j,
    d_ij = (1 - rho_ij) / 2 with rho the Pearson correlation of the continuous codes."""
    b = u.shape[0]
    d = ((1.0 - pearson(u)) / 2.0).clamp(EPS, 1.0 - EPS)
    same = (y[:, None] == y[None, :]).float()
    if not use_fingerprints:
        S = torch.ones_like(d)  # ablation: pairs from labels alone
    pos = -same * S * torch.log(1.0 - d)
    neg = -(1.0 - same) * torch.exp(S) * torch.log(d)
    off = 1.0 - torch.eye(b, device=u.device)
    w = off
    if g is not None:
        has_both = (same * off).sum() > 0 and (1.0 - same).sum() > 0
        if has_both:
            w = off * g[y][:, None] * g[y][None, :]
    return ((pos + neg) * w).sum() / off.sum()


def sch_loss(out, y, x, g, fp_size: int = 16, use_fingerprints: bool = True, w_q: float = 0.5, w_ce: float = 0.5):
    S = fingerprint_similarity(fingerprints(x, fp_size))
    con = sch_contrastive(out["u"], y, S, g, use_fingerprints)
    q = quantization(out["u"])
    ce = F.cross_entropy(out["logits"], y)
    return con + w_q * q + w_ce * ce, {"con": con.item(), "q": q.item(), "ce": ce.item()}


def dpsh_loss(out, y, eta: float = 0.1):
    """Li et al. 2016: pairwise likelihood on theta = <u_i, u_j> / 2, plus quantization."""
    u = torch.tanh(out["u"])
    s = (y[:, None] == y[None, :]).float()
    theta = 0.5 * u @ u.t()
    lik = (F.softplus(theta) - s * theta).mean()
    q = (u - torch.sign(u).detach()).pow(2).mean()
    return lik + eta * q, {"lik": lik.item(), "q": q.item()}


def hashnet_loss(out, y, step: int, alpha: float = 10.0 / 64, beta_step: int = 200):
    """Cao et al. 2017: weighted pairwise cross-entropy (balanced positive and negative pairs) on
    tanh(beta z) codes, beta growing by continuation."""
    beta = math.sqrt(1.0 + step / beta_step) if beta_step else 1.0
    u = torch.tanh(beta * out["u"])
    s = (y[:, None] == y[None, :]).float()
    theta = alpha * u @ u.t() * (64.0 / u.shape[1])
    n_pos, n_all = s.sum(), s.numel()
    w = torch.where(s > 0, n_all / n_pos.clamp(min=1), n_all / (n_all - n_pos).clamp(min=1))
    loss = (w * (F.softplus(theta) - s * theta)).sum() / w.sum()
    return loss, {"pair": loss.item(), "beta": beta}


def hadamard_centers(n_classes: int, bits: int, seed: int = 0) -> torch.Tensor:
    """CSQ hash centres: rows of a Hadamard matrix (and their negations), random if too few."""
    h = torch.ones(1, 1)
    while h.shape[0] < bits:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    cands = torch.cat([h, -h], 0)
    if n_classes <= cands.shape[0]:
        return cands[:n_classes, :bits].clone()
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, (n_classes, bits), generator=gen) * 2 - 1).float()


def csq_loss(out, y, centers, lam: float = 1e-4):
    """Yuan et al. 2020: binary cross-entropy towards the class's hash centre, plus quantization."""
    u = torch.tanh(out["u"])
    c = centers[y]
    center = F.binary_cross_entropy((u + 1) / 2, (c + 1) / 2)
    q = (u.abs() - 1).pow(2).mean()
    return center + lam * q, {"center": center.item(), "q": q.item()}


def cls_tanh_loss(out, y):
    """A classifier whose bottleneck is tanh(u): the code is sign(u)."""
    ce = F.cross_entropy(out["code_logits"], y)
    return ce, {"ce": ce.item()}
