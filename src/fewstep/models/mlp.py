"""A residual MLP for vectors [B, D] with a sinusoidal time embedding.

Small images (e.g. 8×8 digits) can use it too: [B, C, H, W] is flattened on the way in and reshaped
on the way out. On a CPU it trains an order of magnitude faster than the UNet on such images.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..cond import Cond
from .embeddings import TimeEmbedding


class ResidualBlock(nn.Module):
    """h + Linear(SiLU(LayerNorm(h) + emb)): one width² matmul a block keeps the 2D toys fast on a
    CPU; the time embedding enters every block without a projection of its own."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return h + self.drop(self.fc(self.act(self.norm(h) + emb)))


class MLP(nn.Module):
    """F(z, t, cond) for points: ``depth`` residual blocks of ``width`` units."""

    def __init__(
        self, dim: int, width: int = 256, depth: int = 4, dropout: float = 0.0,
        num_classes: int | None = None, guidance: bool = False, text_dim: int | None = None,
    ) -> None:
        super().__init__()
        # How to rebuild this module (a run trained with it records them; see fewstep.runs.build).
        self.init_kwargs = {"dim": dim, "width": width, "depth": depth, "dropout": dropout, "num_classes": num_classes,
                            "guidance": guidance, "text_dim": text_dim}
        self.inp = nn.Linear(dim, width)
        self.time = TimeEmbedding(64, width, num_classes, guidance, text_dim)
        self.blocks = nn.ModuleList(ResidualBlock(width, dropout) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, z: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        emb = self.time(t, cond)            # [B, W]
        h = self.inp(z.flatten(1)) + emb    # [B, W]
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h).view(z.shape)    # [B, D] or [B, C, H, W]
