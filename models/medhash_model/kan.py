"""Kolmogorov-Arnold layer with B-spline edges (the DaRF hash head). Each edge is
SiLU(x) * w_base + sum_k c_k B_k(x), with cubic B-splines on a uniform grid over [-1, 1].
Written with comparisons and arithmetic only, so it exports to ONNX opset 17 as is."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KANLayer(nn.Module):
    def __init__(self, n_in: int, n_out: int, grid: int = 5, order: int = 3, grid_range=(-1.0, 1.0)):
        super().__init__()
        self.n_in, self.n_out, self.order = n_in, n_out, order
        h = (grid_range[1] - grid_range[0]) / grid
        knots = torch.arange(-order, grid + order + 1, dtype=torch.float32) * h + grid_range[0]
        self.register_buffer("knots", knots)
        self.n_basis = grid + order
        self.base = nn.Linear(n_in, n_out)
        self.spline = nn.Parameter(torch.randn(n_out, n_in * self.n_basis) * (0.1 / (n_in ** 0.5)))
        self.norm = nn.LayerNorm(n_in)

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_in) -> (B, n_in, grid + order) Cox-de Boor B-spline values."""
        g = self.knots
        x = x.unsqueeze(-1)
        b = ((x >= g[:-1]) & (x < g[1:])).to(x.dtype)
        for k in range(1, self.order + 1):
            left = (x - g[: -(k + 1)]) / (g[k:-1] - g[: -(k + 1)]) * b[..., :-1]
            right = (g[k + 1:] - x) / (g[k + 1:] - g[1:-k]) * b[..., 1:]
            b = left + right
        return b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # LayerNorm keeps inputs inside the spline grid; outside it only the SiLU path acts.
        x = self.norm(x)
        spline = F.linear(self.basis(x).reshape(x.shape[0], -1), self.spline)
        return self.base(F.silu(x)) + spline
