"""A user's own backbone, importable (``examples.my_net:MyNet`` from the repository root, or ``my_net:MyNet``
with ``examples/`` on the path), so that a run trained with it reopens from its folder."""
import torch
from torch import nn


class MyNet(nn.Module):
    """Any backbone ``F(z_t, t, cond)``: here an MLP that sees t as one extra input."""

    def __init__(self, dim: int = 2, width: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, z, t, cond=None):
        return self.net(torch.cat([z, t[:, None]], dim=1))
