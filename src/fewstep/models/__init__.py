"""Backbones ``F(z, t, cond) -> raw``. Which one a run uses is chosen by name in
:data:`fewstep.runs.build.BACKBONES`."""
from .mlp import MLP
from .unet import UNet

__all__ = ["MLP", "UNet"]
