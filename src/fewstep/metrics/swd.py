"""Sliced Wasserstein distance between two point clouds (images are flattened first).

Notation:
    x, y      samples of P and Q, [N, D] and [M, D]
    θ_k       a fixed random unit direction, k = 1..K (K = ``num_projections``)
    F_θ⁻¹     the empirical quantile function of θ·x (a step function on (0, 1])

    W2_θ(P, Q) = ( ∫₀¹ (F_θ⁻¹(u) − G_θ⁻¹(u))² du )^{1/2}
    SWD(P, Q)  = (1/K) Σ_k W2_θk(P, Q)          (the mean of the 1-D W2 distances, not their RMS)

The integral is exact: both quantile functions are constant between the breakpoints
{i/N} ∪ {j/M}, so it is a finite sum over those intervals; N and M need not match.
The directions come from a ``torch.Generator`` seeded by ``seed``, so the metric is deterministic.
All arithmetic is float64 on the CPU.
"""
from __future__ import annotations

import torch
from torch import Tensor


def random_directions(dim: int, num: int, seed: int = 0) -> Tensor:
    """``num`` unit vectors drawn uniformly on the sphere S^{dim−1}: θ = g / ‖g‖, g ~ N(0, I)."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(num, dim, generator=gen, dtype=torch.float64)  # [K, D]
    return g / g.norm(dim=1, keepdim=True)


def wasserstein2_1d(u: Tensor, v: Tensor) -> Tensor:
    """Exact W2 between the empirical laws of each column: (∫₀¹ (F⁻¹ − G⁻¹)² du)^{1/2}, [N, K], [M, K] → [K]."""
    n, m = len(u), len(v)
    u = u.T.contiguous().sort(dim=1).values.T  # [N, K]; sorting contiguous rows is ~4× faster than columns
    v = v.T.contiguous().sort(dim=1).values.T  # [M, K]
    levels = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                        torch.arange(1, m + 1, dtype=torch.float64) / m]).sort().values  # [N + M]
    widths = torch.diff(levels, prepend=levels.new_zeros(1))  # [N + M], some are 0 (shared breakpoints)
    mids = levels - widths / 2  # inside each interval, where both quantile functions are constant
    iu = (mids * n).long().clamp(max=n - 1)  # F⁻¹(mid) = u_(⌈mid·N⌉), 0-based ⌊mid·N⌋
    iv = (mids * m).long().clamp(max=m - 1)
    sq = (u[iu] - v[iv]).square()  # [N + M, K]
    return (widths[:, None] * sq).sum(0).sqrt()


def sliced_wasserstein(x: Tensor, y: Tensor, *, num_projections: int = 256, seed: int = 0) -> float:
    """SWD = (1/K) Σ_k W2(θ_k·x, θ_k·y) for point clouds [N, D] and [M, D] (or [N, ...], flattened)."""
    x = x.detach().reshape(len(x), -1).to("cpu", torch.float64)  # [N, D]
    y = y.detach().reshape(len(y), -1).to("cpu", torch.float64)  # [M, D]
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"sliced_wasserstein: dimensions differ ({x.shape[1]} vs {y.shape[1]})")
    if len(x) == 0 or len(y) == 0:
        raise ValueError("sliced_wasserstein: both point clouds need at least one point")
    theta = random_directions(x.shape[1], num_projections, seed)  # [K, D]
    return float(wasserstein2_1d(x @ theta.T, y @ theta.T).mean())
