"""Build a backbone and its `Denoiser` from a config and the shape of one example."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .config import TrainConfig
from .errors import UserError
from .models import MLP, UNet
from .param import Denoiser
from .schedules import schedule_from_dict


def build_backbone(config: TrainConfig, shape: Sequence[int], num_classes: int | None = None) -> nn.Module:
    m = config.model
    if m.name == "mlp":
        dim = 1
        for size in shape:
            dim *= size
        return MLP(dim, width=m.width, depth=m.depth, dropout=m.dropout, num_classes=num_classes)
    if m.name == "unet":
        if len(shape) != 3:
            raise UserError(f"--model: unet takes images [N, C, H, W]; this data has examples of shape {list(shape)} (use --model mlp)")
        return UNet(
            shape[0], max(shape[1], shape[2]), width=m.width, mults=m.mults, blocks=m.blocks,
            attn_res=m.attn_res, dropout=m.dropout, num_classes=num_classes,
        )
    raise UserError(f"--model: expected mlp or unet, got {m.name!r}")


def build_denoiser(config: TrainConfig, shape: Sequence[int], num_classes: int | None = None) -> Denoiser:
    return Denoiser(
        build_backbone(config, shape, num_classes),
        schedule_from_dict(config.schedule),
        prediction=config.prediction,  # type: ignore[arg-type]
        precision=config.precision,    # type: ignore[arg-type]
    )
