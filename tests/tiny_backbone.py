"""An importable user backbone for tests/test_runs.py (the tests folder is on sys.path under pytest)."""
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, dim: int = 2, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, z, t, cond=None):
        return self.net(torch.cat([z, t[:, None]], dim=1))


class ClaimsKwargs(TinyNet):
    """Declares constructor arguments that do not rebuild it: ``init_kwargs`` gives twice its width."""

    def __init__(self, dim: int = 2, width: int = 16) -> None:
        super().__init__(dim, width)
        self.init_kwargs = {"dim": dim, "width": 2 * width}
