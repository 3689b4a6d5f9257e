"""A residual MLP for vectors [B, D] with a sinusoidal time embedding."""
from __future__ import annotations

from torch import Tensor, nn

from .embeddings import TimeEmbedding


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.emb = nn.Linear(width, width)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        r = self.act(self.fc1(self.norm(h)) + self.emb(emb))
        return h + self.fc2(self.drop(r))


class MLP(nn.Module):
    """F(z, t, cond) for points: ``depth`` residual blocks of ``width`` units."""

    def __init__(
        self, dim: int, width: int = 256, depth: int = 4, dropout: float = 0.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, width)
        self.time = TimeEmbedding(64, width, num_classes)
        self.blocks = nn.ModuleList(ResidualBlock(width, dropout) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, z: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        emb = self.time(t, cond)  # [B, W]
        h = self.inp(z)           # [B, W]
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)        # [B, D]
