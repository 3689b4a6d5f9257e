"""Backbone, schedule and denoiser from a config: the backbone registry, user classes by import path,
and the recipe that lets a run made from Python reopen from its folder."""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Sequence

from torch import nn

from ..data import Dataset, LazyExamples
from ..errors import UserError
from ..models import MLP, UNet
from ..param import PREDICTION_TYPES, Denoiser
from ..registry import Registry
from ..schedules import schedule_from_dict
from .config import TrainConfig

# name -> builder(config, shape of one example, number of classes or None, embed a guidance weight w); the
# whole config, since a backbone's time input may depend on the schedule (a diffusers UNet's table index)
Builder = Callable[[TrainConfig, Sequence[int], "int | None", bool], nn.Module]
BACKBONES: Registry[Builder] = Registry("backbone")
RECIPE_ATTR = "_fewstep_recipe"   # (import path, kwargs) set by :func:`backbone`


@BACKBONES.register("mlp")
def _mlp(config: TrainConfig, shape: Sequence[int], num_classes: int | None, guidance: bool) -> nn.Module:
    m, dim = config.model, 1
    for size in shape:
        dim *= size
    return MLP(dim, width=m.width, depth=m.depth, dropout=m.dropout, num_classes=num_classes, guidance=guidance)


@BACKBONES.register("unet")
def _unet(config: TrainConfig, shape: Sequence[int], num_classes: int | None, guidance: bool) -> nn.Module:
    m = config.model
    if len(shape) != 3:
        raise UserError(f"unet takes images [N, C, H, W]; this data has examples of shape {list(shape)} (use mlp)", arg="model")
    levels = 2 ** (len(m.mults) - 1)
    if min(shape[1], shape[2]) < 2 * levels:
        # Below that the bottleneck is 1×1, where GroupNorm of a single example has one value per group.
        raise UserError(f"a unet with {len(m.mults)} levels needs images of at least {2 * levels}×{2 * levels}; these are "
                        f"{shape[1]}×{shape[2]} (use mlp)", arg="model")
    return UNet(shape[0], max(shape[1], shape[2]), width=m.width, mults=m.mults, blocks=m.blocks,
                attn_res=m.attn_res, dropout=m.dropout, num_classes=num_classes, guidance=guidance)


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
    with an embedding of the guidance weight for a w-conditioned student (``config.guidance_range``)."""
    num_classes = conditional_classes(config, num_classes)
    m = config.model
    guidance = config.guidance_range is not None
    if guidance and (":" in m.name or not num_classes):
        raise UserError("a w-conditioned student (--guidance-range) needs a class-conditional teacher with fewstep's "
                        "mlp or unet backbone (their embedding of w)", arg="guidance_range")
    if ":" in m.name:
        try:
            return backbone(m.name, **m.kwargs)
        except TypeError as exc:
            raise UserError(f"{m.name}(**{m.kwargs}) failed ({exc})", arg="model") from None
    return BACKBONES.get(m.name, arg="model")(config, shape, num_classes, guidance)


def resolve_cond(config: TrainConfig, dataset: Dataset) -> TrainConfig:
    """``cond = "auto"`` made concrete: "class" for labelled data held in memory, "none" otherwise."""
    if config.cond != "auto":
        return config
    labelled = dataset.num_classes is not None and not isinstance(dataset.train, LazyExamples)
    return dataclasses.replace(config, cond="class" if labelled else "none")


def conditional_classes(config: TrainConfig, num_classes: int | None) -> int | None:
    """The class count the backbone is conditioned on: the data's when ``config.cond`` is "class" (or
    "auto" and the data has labels)."""
    if config.cond == "none" or (config.cond == "auto" and not num_classes):
        return None
    if config.cond not in ("class", "auto"):
        raise UserError(f"expected none, class or auto, got {config.cond!r}", arg="cond")
    if not num_classes:
        raise UserError(f"class conditioning needs labelled data; {config.data!r} has no labels", arg="cond")
    return num_classes


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
