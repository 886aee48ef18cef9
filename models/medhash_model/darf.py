"""Encoders. DaRF (depth-aware representation fusion): a small ResNet whose shallow and deep
stages are each refined by windowed self-attention, fused by cross-attention (shallow queries,
deep keys and values), plus a pixel transformer over the raw deep map whose last blocks' class
and patch tokens give global and local features; [global | local | fused] feeds a KAN hash head.
The bottleneck encoder (same CNN, pooled deep features, linear layer) serves the baselines.
Every module is exportable to ONNX opset 17."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .kan import KANLayer


@dataclass
class ModelConfig:
    n_classes: int
    bits: int = 32
    size: int = 64
    channels: int = 1
    arch: str = "darf"            # darf | bottleneck
    widths: tuple = (32, 64, 128, 256)
    window: int = 4
    heads: int = 4
    head_dim: int = 16
    feat_dim: int = 128
    vit_width: int = 96
    vit_depth: int = 3
    vit_heads: int = 4
    vit_pool: int = 2             # how many last blocks feed the global/local token pooling
    kan_hidden: int = 128
    head: str = "kan"             # kan | linear  (ablation)
    fusion: bool = True           # False: deep features only (ablation)
    dropout: float = 0.1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.short(x))


class Backbone(nn.Module):
    """Stem brings any input size (32 * 2^k) to a 32x32 map; three stride-2 stages follow, so
    the shallow map is 16x16 and the deep map 4x4 whatever the input size."""

    def __init__(self, channels: int, size: int, widths):
        super().__init__()
        if size < 32 or size & (size - 1):
            raise ValueError(f"input size must be a power of two >= 32, got {size}")
        stem = [nn.Conv2d(channels, widths[0], 3, 2 if size >= 64 else 1, 1, bias=False),
                nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        stem += [nn.MaxPool2d(2)] * int(math.log2(max(size // 64, 1)))
        self.stem = nn.Sequential(*stem)
        self.stage1 = BasicBlock(widths[0], widths[1], 2)
        self.stage2 = BasicBlock(widths[1], widths[2], 2)
        self.stage3 = BasicBlock(widths[2], widths[3], 2)

    def forward(self, x):
        s = self.stage1(self.stem(x))
        d = self.stage3(self.stage2(s))
        return s, d


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows with a learned relative position
    bias, added residually, then BatchNorm + ReLU (the released code's mapping)."""

    def __init__(self, ch: int, window: int, heads: int, head_dim: int):
        super().__init__()
        self.w, self.h, self.d = window, heads, head_dim
        self.qkv = nn.Conv2d(ch, 3 * heads * head_dim, 1)
        self.proj = nn.Conv2d(heads * head_dim, ch, 1)
        self.bias = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        c = torch.stack([ys.flatten(), xs.flatten()])
        rel = (c[:, :, None] - c[:, None, :]) + window - 1
        self.register_buffer("rel_index", rel[0] * (2 * window - 1) + rel[1], persistent=False)
        self.post = nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU(inplace=True))

    def forward(self, x):
        b, _, hh, ww = x.shape
        w, h, d = self.w, self.h, self.d
        ny, nx = hh // w, ww // w
        qkv = self.qkv(x).reshape(b, 3, h, d, ny, w, nx, w).permute(1, 0, 4, 6, 2, 5, 7, 3)
        qkv = qkv.reshape(3, b * ny * nx, h, w * w, d)
        q, k, v = qkv[0], qkv[1], qkv[2]
        bias = self.bias[self.rel_index.reshape(-1)].reshape(w * w, w * w, h).permute(2, 0, 1)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + bias, dim=-1)
        out = (attn @ v).reshape(b, ny, nx, h, w, w, d).permute(0, 3, 6, 1, 4, 2, 5).reshape(b, h * d, hh, ww)
        return self.post(x + self.proj(out))


class CrossAttentionFusion(nn.Module):
    """Shallow map as queries, deep map as keys and values (1x1-conv projections), output added
    to the projected queries and average pooled to one vector."""

    def __init__(self, c_shallow: int, c_deep: int, heads: int, head_dim: int, out: int):
        super().__init__()
        self.h, self.d = heads, head_dim
        self.q = nn.Conv2d(c_shallow, heads * head_dim, 1)
        self.kv = nn.Conv2d(c_deep, 2 * heads * head_dim, 1)
        self.proj = nn.Conv2d(heads * head_dim, out, 1)
        self.skip = nn.Conv2d(c_shallow, out, 1)
        self.norm = nn.BatchNorm2d(out)

    def forward(self, s, dmap):
        b, _, hh, ww = s.shape
        h, d = self.h, self.d
        q = self.q(s).reshape(b, h, d, hh * ww).transpose(-1, -2)
        kv = self.kv(dmap).reshape(b, 2, h, d, -1)
        k, v = kv[:, 0], kv[:, 1].transpose(-1, -2)
        attn = torch.softmax(q @ k / math.sqrt(d), dim=-1)
        out = (attn @ v).transpose(-1, -2).reshape(b, h * d, hh, ww)
        return F.relu(self.norm(self.skip(s) + self.proj(out))).mean(dim=(2, 3))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.h = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * width, width))

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(self.n1(x)).reshape(b, n, 3, self.h, c // self.h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // self.h), dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.n2(x))


class PixelTransformer(nn.Module):
    """A ViT with patch size 1 over the raw deep map. The class tokens of the last `pool` blocks,
    concatenated, give the global feature; their patch tokens, concatenated per position, go
    through a per-token linear map (a 1x1 conv) and average pooling to give the local feature."""

    def __init__(self, c_in: int, n_tokens: int, width: int, depth: int, heads: int, pool: int, out: int, dropout: float):
        super().__init__()
        self.embed = nn.Linear(c_in, width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, n_tokens + 1, width) * 0.02)
        self.blocks = nn.ModuleList([Block(width, heads, dropout) for _ in range(depth)])
        self.pool = pool
        self.norm = nn.LayerNorm(width)
        self.global_fc = nn.Linear(pool * width, out)
        self.local_fc = nn.Linear(pool * width, out)

    def forward(self, dmap):
        b = dmap.shape[0]
        tokens = self.embed(dmap.flatten(2).transpose(1, 2))
        x = torch.cat([self.cls.expand(b, -1, -1), tokens], dim=1) + self.pos
        kept = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i >= len(self.blocks) - self.pool:
                kept.append(self.norm(x))
        g = self.global_fc(torch.cat([t[:, 0] for t in kept], dim=-1))
        loc = self.local_fc(torch.cat([t[:, 1:] for t in kept], dim=-1)).mean(dim=1)
        return g, loc


class DaRF(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        self.backbone = Backbone(cfg.channels, cfg.size, w)
        self.deep_attn = WindowAttention(w[3], 4, cfg.heads, cfg.head_dim)
        if cfg.fusion:
            self.shallow_attn = WindowAttention(w[1], cfg.window, cfg.heads, cfg.head_dim)
            self.fuse = CrossAttentionFusion(w[1], w[3], cfg.heads, cfg.head_dim, cfg.feat_dim)
        else:
            self.deep_fc = nn.Linear(w[3], cfg.feat_dim)
        self.vit = PixelTransformer(w[3], 16, cfg.vit_width, cfg.vit_depth, cfg.vit_heads, cfg.vit_pool, cfg.feat_dim, cfg.dropout)
        self.feat_dim = 3 * cfg.feat_dim
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.head == "kan":
            self.hidden = KANLayer(self.feat_dim, cfg.kan_hidden)
            self.hash = KANLayer(cfg.kan_hidden, cfg.bits)
        else:
            self.hidden = nn.Sequential(nn.LayerNorm(self.feat_dim), nn.Linear(self.feat_dim, cfg.kan_hidden), nn.SiLU())
            self.hash = nn.Linear(cfg.kan_hidden, cfg.bits)
        self.classifier = nn.Linear(cfg.kan_hidden, cfg.n_classes)

    def forward(self, x):
        s, d = self.backbone(x)
        dref = self.deep_attn(d)
        if self.cfg.fusion:
            sref = self.shallow_attn(s)
            # the backbone makes the shallow map 16x16 and the deep one 4x4 at every input size; a
            # constant kernel keeps ONNX tracing from turning the shape ratio into a tensor
            sref = F.avg_pool2d(sref, 4)
            fused = self.fuse(sref, dref)
        else:
            fused = self.deep_fc(dref.mean(dim=(2, 3)))
        g, loc = self.vit(d)
        feats = torch.cat([g, loc, fused], dim=1)
        hid = self.hidden(self.drop(feats))
        return {"u": self.hash(hid), "logits": self.classifier(hid), "features": feats, "deep": d, "shallow": s}


class Bottleneck(nn.Module):
    """The same CNN with a plain linear hash layer on its pooled deep features (baselines)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg.channels, cfg.size, cfg.widths)
        self.feat_dim = cfg.widths[3]
        self.drop = nn.Dropout(cfg.dropout)
        self.hash = nn.Linear(self.feat_dim, cfg.bits)
        self.classifier = nn.Linear(self.feat_dim, cfg.n_classes)
        self.code_classifier = nn.Linear(cfg.bits, cfg.n_classes)

    def forward(self, x):
        s, d = self.backbone(x)
        feats = d.mean(dim=(2, 3))
        u = self.hash(self.drop(feats))
        return {"u": u, "logits": self.classifier(feats), "code_logits": self.code_classifier(torch.tanh(u)),
                "features": feats, "deep": d, "shallow": s}


def build(cfg: ModelConfig) -> nn.Module:
    return DaRF(cfg) if cfg.arch == "darf" else Bottleneck(cfg)
