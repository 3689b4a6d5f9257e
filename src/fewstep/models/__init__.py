"""Backbones ``F(z, t, cond) -> raw`` and an explicit name → constructor registry."""
from .mlp import MLP
from .unet import UNet

MODELS = {"mlp": MLP, "unet": UNet}

__all__ = ["MLP", "UNet", "MODELS"]
