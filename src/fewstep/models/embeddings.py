"""Time and class embeddings shared by the backbones."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..cond import Cond


def sinusoidal(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """[B] times in [0, 1] → [B, dim] sinusoidal features of 1000·t (transformer-style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedding(nn.Module):
    """Sinusoidal features → MLP; adds a learned class embedding when ``num_classes`` is set.

    Class ``num_classes`` (one past the last) is the null class for unconditional samples, and what a
    call without a ``class`` condition gets: one "no label", not a second one that skips the embedding.
    """

    def __init__(self, dim: int, out_dim: int, num_classes: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        self.num_classes = num_classes
        self.class_emb = nn.Embedding(num_classes + 1, out_dim) if num_classes else None

    def forward(self, t: Tensor, cond: Cond | None = None) -> Tensor:
        emb = self.mlp(sinusoidal(t, self.dim))  # [B, out_dim]
        if self.class_emb is not None:
            given = cond is not None and "class" in cond
            labels = cond["class"] if given else torch.full((len(t),), self.num_classes, dtype=torch.long, device=t.device)
            emb = emb + self.class_emb(labels)
        return emb
