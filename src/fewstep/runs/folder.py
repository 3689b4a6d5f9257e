"""Reading a run folder as untrusted input: its config, its card, its checkpoint, and a denoiser whose
weights are checked against the backbone the config (or the card's recipe) builds."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..param import PREDICTION_TYPES, Denoiser
from ..schedules import schedule_from_dict
from ..train.checkpoint import Checkpoint, decode_rng, read_checkpoint
from .build import build_denoiser, layout_difference
from .card import RunCard
from .config import TrainConfig


def read_run(workdir: Path | str, *, arg: str = "run", with_optimizer: bool = False) -> tuple[TrainConfig, RunCard, Checkpoint]:
    ckpt = read_checkpoint(workdir, arg=arg, with_optimizer=with_optimizer)
    try:
        config = TrainConfig.from_dict(ckpt.config)
        schedule_from_dict(config.schedule)
        if config.prediction not in PREDICTION_TYPES or config.precision not in ("fp32", "bf16"):
            raise ValueError(f"prediction {config.prediction!r}, precision {config.precision!r}")
    except Exception as exc:  # noqa: BLE001  (any malformed field is one line naming the file)
        raise UserError(f"cannot read {Path(workdir) / 'config.json'} ({UserError.reason(exc)})", arg=arg) from None
    return config, RunCard.from_dict(ckpt.extra, config.objective, arg=arg), ckpt


def check_fits(module: nn.Module, state: dict[str, torch.Tensor], what: str, arg: str) -> None:
    """``state`` has ``module``'s names and shapes: a one-line error instead of PyTorch's multi-line one (a
    config edited to another width, weights of another architecture)."""
    detail = layout_difference(module.state_dict(), state)
    if detail:
        raise UserError(f"{what} do not fit the backbone ({detail})", arg=arg)


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], what: str, arg: str) -> None:
    check_fits(module, state, what, arg)
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
        return build_denoiser(config, card.data_shape, card.num_classes)
    except (UserError, TypeError, ValueError, KeyError) as exc:  # e.g. a user's class not importable here
        raise UserError(f"cannot build the backbone this run's config.json describes ({UserError.reason(exc)})", arg=arg) from None


def check_resumable(ckpt: Checkpoint, backbone: nn.Module, arg: str = "resume") -> None:
    """What the loop restores on resume fits this backbone: weights, EMA, optimiser state, RNG states."""
    check_fits(backbone, ckpt.model, "the checkpoint's weights", arg)
    check_fits(backbone, ckpt.ema, "the checkpoint's EMA weights", arg)
    groups = (ckpt.optimizer or {}).get("param_groups")
    if not (isinstance(groups, list) and len(groups) == 1 and isinstance(groups[0], dict)
            and len(groups[0].get("params", ())) == len(list(backbone.parameters()))):
        raise UserError("the checkpoint holds no optimiser state for this backbone to resume", arg=arg)
    size = torch.Generator().get_state().numel()
    try:
        sizes = [decode_rng(ckpt.rng[key]).numel() for key in ("data", "torch")]
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"the checkpoint's RNG states are unreadable ({type(exc).__name__}: {exc})", arg=arg) from None
    if sizes != [size, size]:
        raise UserError(f"the checkpoint's RNG states have {sizes} bytes; expected {size}", arg=arg)


def open_denoiser(workdir: Path | str, *, arg: str = "run", backbone: nn.Module | None = None,
                  device: torch.device | str = "cpu") -> tuple[TrainConfig, RunCard, Checkpoint, Denoiser]:
    """A run's EMA denoiser in eval mode, with its config, card and checkpoint."""
    config, card, ckpt = read_run(workdir, arg=arg)
    denoiser = rebuild_denoiser(config, card, backbone=backbone, arg=arg)
    load_weights(denoiser.backbone, ckpt.ema, f"the weights in {workdir}", arg)
    return config, card, ckpt, denoiser.to(device).eval()


__all__ = ["read_run", "load_weights", "rebuild_denoiser", "open_denoiser", "check_resumable"]
