"""A diffusers ``UNet2DModel`` as a fewstep backbone F(z_t, t, cond) (docs/math.md §12): the wrapper a
diffusers teacher is called through, and the registered backbone ``diffusers-unet``, whose weights are a
``UNet2DModel`` that ``fewstep export`` writes for stock diffusers (export.py). Caption-conditioned, the
same backbone is a ``UNet2DConditionModel``: the text encoder's token states are its
``encoder_hidden_states``, their mask its ``encoder_attention_mask`` (docs/math.md §13).

A UNet2DModel knows time only as the index i of a T-step table (t_i = (i + 1)/T), so this backbone needs a
tabulated schedule: a teacher fewstep trains with it uses :data:`DEFAULT_TABLE` (squaredcos_cap_v2 betas at
T = 1024, v-prediction: every S = 2^k divides T, so each such student exports onto DDIMScheduler's grid),
a student of a diffusers teacher its teacher's table. diffusers is imported only when one is built.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..cond import Cond
from ..errors import UserError
from ..models.unet import norm_groups
from ..prompts import TEXT, TEXT_MASK
from ..schedules import TabulatedSchedule, describe, schedule_from_dict, table_steps
from .build import BACKBONES, Conditioning
from .config import TrainConfig

# The table a fewstep-trained diffusers-unet teacher uses (docs/math.md §12): squaredcos_cap_v2 is
# diffusers' cosine, and T = 1024 makes every S = 2^k divide T.
DEFAULT_TABLE = ("squaredcos_cap_v2", 1024)
UNET, TEXT_UNET = "UNet2DModel", "UNet2DConditionModel"
HEAD_DIM = 32  # channels per attention head in a laid-out UNet2DConditionModel, as fewstep's own UNet


def diffusers(arg: str = "model") -> Any:
    try:
        import diffusers
    except ImportError:
        raise UserError("this needs the diffusers package: pip install 'fewstep[diffusers]'", arg=arg) from None
    return diffusers


def table(beta_schedule: str = DEFAULT_TABLE[0], steps: int = DEFAULT_TABLE[1]) -> dict[str, Any]:
    """The schedule dict of diffusers' named ``beta_schedule`` at T = ``steps`` (``TrainConfig.schedule``),
    with the betas exactly as diffusers' DDIMScheduler builds them."""
    betas = diffusers().DDIMScheduler(num_train_timesteps=steps, beta_schedule=beta_schedule).betas
    return TabulatedSchedule(betas.double()).to_dict()


def class_index(num_class_embeds: int | None, num_classes: int | None, null_class: int | None) -> list[int] | None:
    """The UNet's class index of each fewstep label 0…K−1 and, when it has one, of fewstep's null label K
    (docs/math.md §10): the data's classes in order on the indices other than the null. None for an
    unconditional UNet. K + 1 embeddings have a null (index K unless ``null_class`` says), K have none."""
    if num_class_embeds is None:
        if null_class is not None:
            raise UserError("the teacher's UNet is unconditional; it has no null class", arg="teacher_null_class")
        return None
    if not num_classes:
        raise UserError(f"the teacher's UNet is class-conditional ({num_class_embeds} class embeddings); the data has no labels", arg="teacher")
    if num_class_embeds == num_classes:
        if null_class is not None:
            raise UserError(f"the teacher's UNet has {num_class_embeds} class embeddings for the data's {num_classes} classes: "
                            "none is left for a null class", arg="teacher_null_class")
        return list(range(num_classes))
    if num_class_embeds != num_classes + 1:
        raise UserError(f"the teacher's UNet has {num_class_embeds} class embeddings and the data {num_classes} classes; expected "
                        f"{num_classes} (no null class) or {num_classes + 1} (with a null class)", arg="teacher")
    null = num_classes if null_class is None else null_class
    if not 0 <= null <= num_classes:
        raise UserError(f"expected a class index in 0..{num_classes}, got {null}", arg="teacher_null_class")
    return [i for i in range(num_class_embeds) if i != null] + [null]


def has_null(index: list[int] | None, num_classes: int | None) -> bool:
    """Whether a :func:`class_index` maps fewstep's null label K too (the UNet has a null class)."""
    return index is not None and len(index) > (num_classes or 0)


def is_text_unet(config: dict[str, Any]) -> bool:
    """Whether a UNet config (saved, or without diffusers' bookkeeping) is a UNet2DConditionModel's: only
    that class has cross-attention."""
    return config.get("_class_name") == TEXT_UNET or "cross_attention_dim" in config


def text_width(config: dict[str, Any]) -> int:
    """The width of the token states a UNet2DConditionModel reads: ``encoder_hid_dim`` when it projects
    them (then onto ``cross_attention_dim``), else ``cross_attention_dim`` itself (diffusers' default 1280)."""
    return int(config.get("encoder_hid_dim") or config.get("cross_attention_dim") or 1280)


class DiffusersUNet(nn.Module):
    """A diffusers ``UNet2DModel`` or ``UNet2DConditionModel`` as a backbone F(z_t, t, cond) (docs/math.md
    §12). Its timestep is t·T − 1 as a float tensor: a Python float would be truncated to an integer index,
    and a fractional time is a point between two trained ones. Times below t_0 = 1/T get index 0, as the
    schedule gives them α(t_0). Labels go through ``class_index`` (:func:`class_index`); no label is fewstep's
    null, K. A UNet2DConditionModel reads ``cond["text"]`` and its mask (from :class:`TextConditioned`)."""

    def __init__(self, unet: nn.Module, steps: int, class_index: list[int] | None = None, num_classes: int | None = None) -> None:
        super().__init__()
        self.unet, self.steps, self.has_null = unet, steps, has_null(class_index, num_classes)
        self.text = type(unet).__name__ == TEXT_UNET
        self.register_buffer("class_index", None if class_index is None else torch.tensor(class_index), persistent=False)

    def forward(self, z_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        timestep = (t.double() * self.steps - 1.0).clamp_min(0.0).to(torch.float32)
        if self.text:
            if cond is None or TEXT not in cond:
                raise ValueError("a UNet2DConditionModel needs token states: wrap it in TextConditioned")
            # diffusers turns the mask into a −10⁴ bias: padding gets no attention weight in float32
            return self.unet(z_t, timestep, encoder_hidden_states=cond[TEXT], encoder_attention_mask=cond[TEXT_MASK]).sample
        labels = None
        if self.class_index is not None:
            if cond is not None and "class" in cond:
                labels = self.class_index[cond["class"].long()]
            elif self.has_null:
                labels = self.class_index[-1].expand(len(z_t))
            else:
                raise ValueError("this UNet has no null class: every example needs a class label")
        return self.unet(z_t, timestep, class_labels=labels).sample


def init_args(config: dict[str, Any]) -> dict[str, Any]:
    """A saved UNet config without diffusers' bookkeeping (``_class_name``, ``_diffusers_version``, …)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


def unet_config(config: TrainConfig, shape: Sequence[int], num_classes: int | None, text_dim: int | None = None) -> dict[str, Any]:
    """A UNet2DModel config from fewstep's model fields, laid out like fewstep's own UNet: ``width`` × ``mults``
    channels, ``blocks`` residual blocks per level, self-attention at sides ≤ ``attn_res``, and K + 1 class
    embeddings for K classes (the last, K, is the null class). With ``text_dim``, a UNet2DConditionModel's:
    self- and cross-attention to token states of that width at the same sides and in the middle."""
    m = config.model
    if len(shape) != 3:
        raise UserError(f"diffusers-unet takes images [N, C, H, W]; this data has examples of shape {list(shape)} (use mlp)", arg="model")
    channels, height, width = shape
    multiple = 2 ** (len(m.mults) - 1)
    if height % multiple or width % multiple or min(height, width) < 2 * multiple:
        # UNet2DModel does not pad (fewstep's unet does), and a 1×1 bottleneck leaves GroupNorm one value per group.
        raise UserError(f"a UNet2DModel with {len(m.mults)} levels needs image sides that are multiples of {multiple} and at least "
                        f"{2 * multiple}; these are {height}×{width}", arg="model")
    sides = [min(height, width) // 2**level for level in range(len(m.mults))]
    channels_of = [m.width * k for k in m.mults]
    common = {"sample_size": height if height == width else [height, width], "in_channels": channels, "out_channels": channels,
              "block_out_channels": channels_of, "layers_per_block": m.blocks, "dropout": m.dropout,
              "norm_num_groups": norm_groups(m.width)}
    attention = "CrossAttn" if text_dim else "Attn"
    blocks = {"down_block_types": [f"{attention}DownBlock2D" if side <= m.attn_res else "DownBlock2D" for side in sides],
              "up_block_types": [f"{attention}UpBlock2D" if side <= m.attn_res else "UpBlock2D" for side in reversed(sides)]}
    if text_dim:  # attention_head_dim is, for this class, the number of heads (diffusers keeps the old name)
        return {**common, **blocks, "mid_block_type": "UNetMidBlock2DCrossAttn", "cross_attention_dim": text_dim,
                "attention_head_dim": [max(1, c // HEAD_DIM) for c in channels_of]}
    return {**common, **blocks, "attention_head_dim": None, "num_class_embeds": num_classes + 1 if num_classes else None}


@BACKBONES.register("diffusers-unet")
def _build(config: TrainConfig, shape: Sequence[int], c: Conditioning) -> nn.Module:
    """``config.model.kwargs`` is a UNet2DModel or UNet2DConditionModel config (a diffusers teacher's, for its
    student), else one is laid out from the model fields by :func:`unet_config`."""
    num_classes = c.num_classes
    if c.guidance:
        raise UserError("a w-conditioned student needs fewstep's mlp or unet: a UNet2DModel has no input for w (its class "
                        "embedding holds the labels)", arg="guidance_range")
    schedule = schedule_from_dict(config.schedule)
    steps = table_steps(schedule)
    if steps is None:
        raise UserError(f"diffusers-unet knows time only as the index of a T-step table, and this schedule is "
                        f"{describe(schedule)}; give it a tabulated one (the CLI's default for this model: "
                        f"{DEFAULT_TABLE[0]} at T = {DEFAULT_TABLE[1]}; from Python fewstep.runs.diffusers_unet.table())", arg="model")
    unet = dict(config.model.kwargs) or unet_config(config, shape, num_classes, c.text_dim)
    if is_text_unet(unet) != bool(c.text_dim):
        raise UserError("a UNet2DConditionModel reads captions, so its run must too (cond text)" if c.text_dim is None else
                        "a UNet2DModel reads no captions; a caption-conditioned diffusers-unet is a UNet2DConditionModel "
                        "(its config has a cross_attention_dim)", arg="cond")
    if c.text_dim and text_width(unet) != c.text_dim:
        raise UserError(f"the UNet2DConditionModel reads token states of width {text_width(unet)}; the text encoder "
                        f"{config.text_encoder!r} gives {c.text_dim}", arg="text_encoder")
    embeds = unet.get("num_class_embeds")
    if bool(embeds) != bool(num_classes):
        raise UserError(f"the UNet is {'class-conditional' if embeds else 'unconditional'}, so its student must be too "
                        f"(cond {'class' if embeds else 'none'})", arg="cond")
    index = class_index(embeds, num_classes, config.teacher_null_class)
    return DiffusersUNet(getattr(diffusers(), TEXT_UNET if c.text_dim else UNET).from_config(unet), steps, index, num_classes)
