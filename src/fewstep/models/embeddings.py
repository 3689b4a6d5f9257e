"""Time, class, guidance-weight and caption embeddings shared by the backbones."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..cond import GUIDANCE, Cond
from ..prompts import TEXT, TEXT_MASK
from ..text import sentence_vectors

GUIDANCE_SCALE = 10.0  # w / 10 takes the place of t in the sinusoidal features: w in [0, 10] spans them like t


def sinusoidal(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """[B] times in [0, 1] → [B, dim] sinusoidal features of 1000·t (transformer-style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedding(nn.Module):
    """Sinusoidal features → MLP; adds a learned class embedding when ``num_classes`` is set, and an
    embedding of the guidance weight w when ``guidance`` is set (a w-conditioned student, docs/math.md §10).

    Class ``num_classes`` (one past the last) is the null class for unconditional samples, and what a
    call without a ``class`` condition gets: one "no label", not a second one that skips the embedding.
    A call without a ``guidance`` condition gets w = 1 (the conditional model). The w embedding's last
    layer starts at zero, so a student started from its teacher's weights starts as the teacher.
    With ``text_dim``, the caption's sentence vector (its token states' masked mean, docs/math.md §13)
    is projected and added: the global content of a caption, beside the backbone's cross-attention.
    """

    def __init__(self, dim: int, out_dim: int, num_classes: int | None = None, guidance: bool = False,
                 text_dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        self.num_classes = num_classes
        self.class_emb = nn.Embedding(num_classes + 1, out_dim) if num_classes else None
        self.guidance_mlp = None
        if guidance:
            self.guidance_mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
            nn.init.zeros_(self.guidance_mlp[-1].weight)
            nn.init.zeros_(self.guidance_mlp[-1].bias)
        self.text_proj = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, out_dim)) if text_dim else None

    def forward(self, t: Tensor, cond: Cond | None = None) -> Tensor:
        emb = self.mlp(sinusoidal(t, self.dim))  # [B, out_dim]
        if self.class_emb is not None:
            given = cond is not None and "class" in cond
            labels = cond["class"] if given else torch.full((len(t),), self.num_classes, dtype=torch.long, device=t.device)
            emb = emb + self.class_emb(labels)
        if self.guidance_mlp is not None:
            w = cond[GUIDANCE] if cond is not None and GUIDANCE in cond else torch.ones(len(t), device=t.device)
            emb = emb + self.guidance_mlp(sinusoidal(w / GUIDANCE_SCALE, self.dim))
        if self.text_proj is not None:
            emb = emb + self.text_proj(sentence_vectors(cond[TEXT], cond[TEXT_MASK]))
        return emb

