"""Does the generator copy its training set? A nearest-neighbour check in pixel space.

Notation:
    d(s)   = min_{x ∈ train} ‖s − x‖₂           for a generated sample s (flattened)
    d_ho   = {d(h) : h ∈ held-out}              what fresh images from the same law score
    ratio  = d(s) / median(d_ho)                 ≈ 1 for a generator that does not copy, 0 for a copy
    copy   ⇔ d(s) ≤ q_p(d_ho)                    q_p: the p-th percentile (p = 1 by default)

Reported: the median ratio and the fraction of samples flagged as copies (≈ p/100 for held-out images).
"""
from __future__ import annotations

import torch
from torch import Tensor


def nearest_distances(queries: Tensor, bank: Tensor, batch_size: int = 1024) -> Tensor:
    """d_i = min_j ‖q_i − b_j‖₂ over flattened rows, [N, ...], [M, ...] → [N] (float64, CPU)."""
    q = queries.detach().reshape(len(queries), -1).to("cpu", torch.float64)  # [N, D]
    b = bank.detach().reshape(len(bank), -1).to("cpu", torch.float64)        # [M, D]
    if q.shape[1] != b.shape[1]:
        raise ValueError(f"nearest_distances: dimensions differ ({q.shape[1]} vs {b.shape[1]})")
    # float64 keeps the matrix-product form of cdist exact enough that a copy scores ~1e-7, not ~1e-3.
    out = [torch.cdist(chunk, b).min(dim=1).values for chunk in q.split(batch_size)]  # [n_chunk]
    return torch.cat(out) if out else q.new_zeros(0)


def memorisation(samples: Tensor, train: Tensor, heldout: Tensor, *, percentile: float = 1.0) -> dict[str, float]:
    """Median of d(s) / median(d_ho) and the fraction of samples with d(s) ≤ q_percentile(d_ho)."""
    d = nearest_distances(samples, train)       # [N]
    d_ho = nearest_distances(heldout, train)    # [M]
    scale = float(d_ho.median())
    threshold = float(torch.quantile(d_ho, percentile / 100.0))
    ratio = d / scale if scale > 0 else torch.full_like(d, float("inf"))
    return {
        "nn_ratio_median": float(ratio.median()),
        "nn_copy_fraction": float((d <= threshold).double().mean()),
        "nn_heldout_median": scale,
        "nn_threshold": threshold,
    }
