"""Reading a run folder as untrusted input: its config, its card, its checkpoint, and a denoiser whose
weights are checked against the backbone the config (or the card's recipe) builds."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..param import Denoiser
from ..schedules import schedule_from_dict
from ..train.checkpoint import Checkpoint, read_checkpoint
from .build import build_denoiser
from .card import RunCard
from .config import TrainConfig


def read_run(workdir: Path | str, *, arg: str = "run", with_optimizer: bool = False) -> tuple[TrainConfig, RunCard, Checkpoint]:
    ckpt = read_checkpoint(workdir, arg=arg, with_optimizer=with_optimizer)
    try:
        config = TrainConfig.from_dict(ckpt.config)
    except (TypeError, ValueError, UserError) as exc:
        raise UserError(f"cannot read {Path(workdir) / 'config.json'} ({exc})", arg=arg) from None
    return config, RunCard.from_dict(ckpt.extra, config.objective, arg=arg), ckpt


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], where: str, arg: str) -> None:
    """``module.load_state_dict(state)`` with names and shapes checked first: a one-line error instead of
    PyTorch's multi-line one (a config edited to another width, weights of another architecture)."""
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        shapes = [f"{k}: {have[k]} vs {want[k]}" for k in sorted(set(want) & set(have)) if want[k] != have[k]]
        detail = "; ".join(part for part in (
            f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
            f"shapes {shapes[:3]}" if shapes else "") if part)
        raise UserError(f"the weights in {where} do not fit the backbone its config describes ({detail})", arg=arg)
    module.load_state_dict(state)


def rebuild_denoiser(config: TrainConfig, card: RunCard, *, backbone: nn.Module | None = None, arg: str = "run") -> Denoiser:
    """The run's denoiser (weights not loaded): from the config, from the card's recipe for a user's
    class, or around ``backbone`` (an instance, for classes fewstep cannot rebuild)."""
    if backbone is not None:
        return Denoiser(backbone, schedule_from_dict(config.schedule), prediction=config.prediction, precision=config.precision)  # type: ignore[arg-type]
    if card.backbone is not None and card.backbone.kwargs is None:
        raise UserError(f"this run's backbone {card.backbone.cls} cannot be rebuilt by fewstep (its constructor arguments "
                        "are unknown); pass an instance: fewstep.load(run, backbone=...)", arg=arg)
    try:
        return build_denoiser(config, card.data_shape)
    except UserError as exc:  # e.g. a user's class that is not importable here: say which run needs it
        raise UserError(f"cannot rebuild the backbone of this run ({exc.detail}); put its module on PYTHONPATH or "
                        "pass an instance: fewstep.load(run, backbone=...)", arg=arg) from None


def open_denoiser(workdir: Path | str, *, arg: str = "run", backbone: nn.Module | None = None,
                  device: torch.device | str = "cpu") -> tuple[TrainConfig, RunCard, Checkpoint, Denoiser]:
    """A run's EMA denoiser in eval mode, with its config, card and checkpoint."""
    config, card, ckpt = read_run(workdir, arg=arg)
    denoiser = rebuild_denoiser(config, card, backbone=backbone, arg=arg)
    load_weights(denoiser.backbone, ckpt.ema, str(workdir), arg)
    return config, card, ckpt, denoiser.to(device).eval()


__all__ = ["read_run", "load_weights", "rebuild_denoiser", "open_denoiser"]
