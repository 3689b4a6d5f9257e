"""Backbone, schedule and denoiser from a config: the backbone registry, user classes by import path,
and the recipe that lets a run made from Python reopen from its folder."""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ..cond import Cond
from ..data import Dataset
from ..errors import UserError
from ..models import MLP, UNet
from ..param import PREDICTION_TYPES, Denoiser
from ..prompts import CAPTION, NULL_CAPTION, TextConditioned, prompt_bank
from ..registry import Registry
from ..schedules import schedule_from_dict
from .config import TrainConfig

CONDITIONS = ("none", "class", "text", "auto")


@dataclass(frozen=True)
class Conditioning:
    """What a backbone is conditioned on: ``num_classes`` labels (plus a null class), an embedding of the
    guidance weight w (a w-conditioned student), captions' token states of width ``text_dim``."""

    num_classes: int | None = None
    guidance: bool = False
    text_dim: int | None = None


# name -> builder(config, shape of one example, conditioning); the whole config, since a backbone's time
# input may depend on the schedule (a diffusers UNet's table index)
Builder = Callable[[TrainConfig, Sequence[int], Conditioning], nn.Module]
BACKBONES: Registry[Builder] = Registry("backbone")
RECIPE_ATTR = "_fewstep_recipe"   # (import path, kwargs) set by :func:`backbone`


@BACKBONES.register("mlp")
def _mlp(config: TrainConfig, shape: Sequence[int], c: Conditioning) -> nn.Module:
    m, dim = config.model, 1
    for size in shape:
        dim *= size
    return MLP(dim, width=m.width, depth=m.depth, dropout=m.dropout, num_classes=c.num_classes, guidance=c.guidance,
               text_dim=c.text_dim)


@BACKBONES.register("unet")
def _unet(config: TrainConfig, shape: Sequence[int], c: Conditioning) -> nn.Module:
    m = config.model
    if len(shape) != 3:
        raise UserError(f"unet takes images [N, C, H, W]; this data has examples of shape {list(shape)} (use mlp)", arg="model")
    levels = 2 ** (len(m.mults) - 1)
    if min(shape[1], shape[2]) < 2 * levels:
        # Below that the bottleneck is 1×1, where GroupNorm of a single example has one value per group.
        raise UserError(f"a unet with {len(m.mults)} levels needs images of at least {2 * levels}×{2 * levels}; these are "
                        f"{shape[1]}×{shape[2]} (use mlp)", arg="model")
    return UNet(shape[0], max(shape[1], shape[2]), width=m.width, mults=m.mults, blocks=m.blocks,
                attn_res=m.attn_res, dropout=m.dropout, num_classes=c.num_classes, guidance=c.guidance, text_dim=c.text_dim)


def import_class(path: str) -> type:
    """``"package.module:Class"`` → the class; a one-line error if it cannot be imported."""
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001  (whatever importing a user's module raises, it is one line here)
        raise UserError(f"cannot import the backbone class {path!r} ({type(exc).__name__}: {exc}); put its module on "
                        "PYTHONPATH, or pass an instance: fewstep.load(run, backbone=...)", arg="model") from None
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise UserError(f"{path!r} is not an nn.Module class", arg="model")
    return obj


def build_backbone(config: TrainConfig, shape: Sequence[int], num_classes: int | None = None) -> nn.Module:
    """The backbone ``config.model`` names for examples of ``shape``; class-conditional on the data's
    ``num_classes`` labels when ``config.cond`` is "class" (one more class embedding row is the null);
    caption-conditioned through the text encoder's prompt bank when it is "text" (docs/math.md §13); with an
    embedding of the guidance weight for a w-conditioned student (``config.guidance_range``)."""
    num_classes = conditional_classes(config, num_classes)
    text = config.cond == "text"
    bank = prompt_bank(config.text_encoder) if text else None
    m = config.model
    guidance = config.guidance_range is not None
    if guidance and (":" in m.name or not (num_classes or text)):
        raise UserError("a w-conditioned student (--guidance-range) needs a class- or caption-conditional teacher with "
                        "fewstep's mlp or unet backbone (their embedding of w)", arg="guidance_range")
    if ":" in m.name:
        try:
            net = backbone(m.name, **m.kwargs)
        except TypeError as exc:
            raise UserError(f"{m.name}(**{m.kwargs}) failed ({exc})", arg="model") from None
    else:
        c = Conditioning(num_classes, guidance, bank.dim if bank is not None else None)
        net = BACKBONES.get(m.name, arg="model")(config, shape, c)
    return TextConditioned(net, bank) if bank is not None else net


def resolve_cond(config: TrainConfig, dataset: Dataset) -> TrainConfig:
    """``cond = "auto"`` made concrete: "text" for captioned data, "class" for labelled data, "none" otherwise
    (streamed or not: a batch's condition is picked from the split's, held in memory)."""
    if config.cond != "auto":
        return config
    cond = "text" if dataset.train_captions is not None else "class" if dataset.num_classes is not None else "none"
    return dataclasses.replace(config, cond=cond)


def conditional_classes(config: TrainConfig, num_classes: int | None) -> int | None:
    """The class count the backbone is conditioned on: the data's when ``config.cond`` is "class" (or
    "auto" and the data has labels)."""
    if config.cond not in CONDITIONS:
        raise UserError(f"expected one of {', '.join(CONDITIONS)}, got {config.cond!r}", arg="cond")
    if config.cond in ("none", "text") or (config.cond == "auto" and not num_classes):
        return None
    if not num_classes:
        raise UserError(f"class conditioning needs labelled data; {config.data!r} has no labels", arg="cond")
    return num_classes


def cond_nulls(config: TrainConfig, num_classes: int | None) -> dict[str, int]:
    """Per condition key, the value that means "no condition": class K, the empty caption (docs/math.md §10)."""
    if config.cond == "class":
        return {"class": int(num_classes)} if num_classes else {}
    return {CAPTION: NULL_CAPTION} if config.cond == "text" else {}


def data_cond(config: TrainConfig, dataset: Dataset, heldout: bool = False) -> Cond | None:
    """The condition of the training (``heldout``: held-out) examples: their labels or their captions' ids."""
    if config.cond == "class":
        labels = dataset.heldout_labels if heldout else dataset.train_labels
        return {"class": torch.as_tensor(labels).long()}
    if config.cond == "text":
        captions = dataset.heldout_captions if heldout else dataset.train_captions
        if captions is None:
            raise UserError(f"text conditioning needs captioned data; {config.data!r} has no captions", arg="cond")
        return prompt_cond(config, captions)
    return None


def prompt_cond(config: TrainConfig, prompts: Sequence[str]) -> Cond:
    """The condition of samples of ``prompts``: their ids in the run's prompt bank (encoded on first sight)."""
    return {CAPTION: prompt_bank(config.text_encoder).ids(list(prompts))}


def build_denoiser(config: TrainConfig, shape: Sequence[int], num_classes: int | None = None) -> Denoiser:
    if config.prediction not in PREDICTION_TYPES:
        raise UserError(f"expected one of {', '.join(PREDICTION_TYPES)}, got {config.prediction!r}", arg="prediction")
    return Denoiser(
        build_backbone(config, shape, num_classes),
        schedule_from_dict(config.schedule),
        prediction=config.prediction,  # type: ignore[arg-type]
        precision=config.precision,    # type: ignore[arg-type]
    )


def backbone(path: str, **kwargs: Any) -> nn.Module:
    """Build a user's backbone ``Class(**kwargs)`` from its import path and remember how, so that a run
    trained with it reopens from its folder: ``backbone("my_net:MyNet", dim=2, width=128)``."""
    module = import_class(path)(**kwargs)
    setattr(module, RECIPE_ATTR, (path, dict(kwargs)))
    return module


def recipe_of(module: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """How to rebuild ``module``: from :func:`backbone`, or an importable class with an ``init_kwargs``
    dict; None when fewstep cannot know its constructor arguments."""
    recipe = getattr(module, RECIPE_ATTR, None)
    if recipe is not None:
        return recipe
    cls = type(module)
    kwargs = getattr(module, "init_kwargs", None)
    if isinstance(kwargs, dict) and cls.__module__ != "__main__" and "<locals>" not in cls.__qualname__:
        return f"{cls.__module__}:{cls.__qualname__}", dict(kwargs)
    return None


def describe_class(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}:{cls.__qualname__}"


def layout(state: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a state dict: what weights must match to load into a module."""
    return {k: tuple(v.shape) for k, v in state.items()}


def layout_difference(want: dict[str, Any], have: dict[str, Any]) -> str:
    """The first few differences between two state dicts' layouts, in words ("" when they match)."""
    want, have = layout(want), layout(have)
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    shapes = [f"{k}: {have[k]} vs {want[k]}" for k in sorted(set(want) & set(have)) if want[k] != have[k]]
    return "; ".join(part for part in (
        f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
        f"shapes {shapes[:3]}" if shapes else "") if part)


def check_rebuilds(module: nn.Module, rebuilt: nn.Module, what: str) -> None:
    """The rebuilt backbone has the same parameter and buffer names and shapes as ``module``."""
    diff = layout_difference(module.state_dict(), rebuilt.state_dict())
    if diff:
        raise UserError(f"{what} does not rebuild the given backbone ({diff})", arg="student")


def evaluation_conditions(config: TrainConfig | None, dataset: Dataset, rows: torch.Tensor) -> tuple[Tensor | None, list[str] | None, Cond | None]:
    """(labels, prompts, cond) of evaluation samples ``rows`` (indices): class i mod K, or the held-out
    caption i mod their count (with that image's label, for the class accuracy); all None unconditional."""
    if config is None or config.cond == "none":
        return None, None, None
    if config.cond == "class":
        labels = rows % dataset.num_classes
        return labels, None, {"class": labels}
    captions = dataset.heldout_captions
    pick = rows % len(captions)
    prompts = [captions[i] for i in pick.tolist()]
    labels = dataset.heldout_labels[pick] if dataset.heldout_labels is not None else None
    return labels, prompts, prompt_cond(config, prompts)
