"""Exponential moving average of weights with a decay set by a half-life in steps."""
from __future__ import annotations

import copy

import torch
from torch import nn


def decay_from_halflife(halflife_steps: float) -> float:
    """β such that β^h = 1/2: after h steps an old weight's share has halved."""
    return 0.5 ** (1.0 / max(halflife_steps, 1e-8))


class EMA:
    def __init__(self, model: nn.Module, halflife_steps: float) -> None:
        self.decay = decay_from_halflife(halflife_steps)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - self.decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
