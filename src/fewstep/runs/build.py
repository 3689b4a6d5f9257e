"""Backbone, schedule and denoiser from a config: the backbone registry, user classes by import path,
and the recipe that lets a run made from Python reopen from its folder."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Sequence

from torch import nn

from ..errors import UserError
from ..models import MLP, UNet
from ..param import PREDICTION_TYPES, Denoiser
from ..registry import Registry
from ..schedules import schedule_from_dict
from .config import ModelConfig, TrainConfig

# name -> builder(model config, shape of one example, number of classes or None)
Builder = Callable[[ModelConfig, Sequence[int], "int | None"], nn.Module]
BACKBONES: Registry[Builder] = Registry("backbone")
RECIPE_ATTR = "_fewstep_recipe"   # (import path, kwargs) set by :func:`backbone`


@BACKBONES.register("mlp")
def _mlp(m: ModelConfig, shape: Sequence[int], num_classes: int | None) -> nn.Module:
    dim = 1
    for size in shape:
        dim *= size
    return MLP(dim, width=m.width, depth=m.depth, dropout=m.dropout, num_classes=num_classes)


@BACKBONES.register("unet")
def _unet(m: ModelConfig, shape: Sequence[int], num_classes: int | None) -> nn.Module:
    if len(shape) != 3:
        raise UserError(f"unet takes images [N, C, H, W]; this data has examples of shape {list(shape)} (use mlp)", arg="model")
    return UNet(shape[0], max(shape[1], shape[2]), width=m.width, mults=m.mults, blocks=m.blocks,
                attn_res=m.attn_res, dropout=m.dropout, num_classes=num_classes)


def import_class(path: str) -> type:
    """``"package.module:Class"`` → the class; a one-line error if it cannot be imported."""
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UserError(f"cannot import the backbone class {path!r} ({exc}); is its module on the Python path?", arg="model") from None
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise UserError(f"{path!r} is not an nn.Module class", arg="model")
    return obj


def build_backbone(config: TrainConfig, shape: Sequence[int], num_classes: int | None = None) -> nn.Module:
    m = config.model
    if ":" in m.name:
        try:
            return backbone(m.name, **m.kwargs)
        except TypeError as exc:
            raise UserError(f"{m.name}(**{m.kwargs}) failed ({exc})", arg="model") from None
    return BACKBONES.get(m.name, arg="model")(m, shape, num_classes)


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


def check_rebuilds(module: nn.Module, rebuilt: nn.Module, what: str) -> None:
    """The rebuilt backbone has the same parameter and buffer names and shapes as ``module``."""
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))[:3]
        raise UserError(f"{what} does not rebuild the given backbone (first differences: {diff})", arg="student")
