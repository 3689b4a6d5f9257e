"""Teachers from diffusers (``diffusers:PATH``): a local folder written by ``save_pretrained`` as a fewstep
denoiser on its own schedule (docs/math.md §12).

    PATH/model_index.json, unet/, scheduler/   a pipeline folder (DDPMPipeline, DDIMPipeline)
    PATH/unet/, scheduler/                      or the pair alone

The UNet is a ``UNet2DModel``, unconditional or class-conditional through ``num_class_embeds``, or a
``UNet2DConditionModel`` conditioned on captions (its ``encoder_hidden_states`` are the run's text encoder's
token states, the empty caption its null); the scheduler a ``DDPMScheduler`` or ``DDIMScheduler`` whose
betas become a :class:`TabulatedSchedule`. Every check reads the JSON configs first, so a refused folder
costs no weights. A student is by default the teacher's own UNet (backbone ``diffusers-unet``,
diffusers_unet.py) started from its weights; an ε-prediction teacher's x̂ is clipped to [−1, 1] in CD
(teachers.clips_x) and its student predicts v. diffusers is the optional extra ``fewstep[diffusers]``,
imported only when a folder is read.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..data import Dataset
from ..errors import UserError
from ..param import Clipped, Denoiser, DenoiserLike
from ..prompts import TextConditioned, prompt_bank
from ..schedules import TabulatedSchedule
from .card import RunCard
from .config import TrainConfig
from .diffusers_unet import TEXT_UNET, UNET, DiffusersUNet, class_index, diffusers, has_null, init_args, is_text_unet, text_width
from .teachers import STUDENT_SETTINGS, TEACHER_SOURCES, SourceContext, Teacher, clips_x

if TYPE_CHECKING:
    from .run import Run

SOURCE = "diffusers"  # the teacher source's name: --teacher diffusers:PATH
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x"}   # diffusers' prediction_type → ours
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
SCHEDULERS = ("DDPMScheduler", "DDIMScheduler")
LATENT = ("vae", "vqvae")  # pipeline components of latent diffusion: its UNet never sees the data itself
WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")  # one file, or shards
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def _refuse(where: Path | str, message: str) -> UserError:
    return UserError(f"{where}: {message}", arg="teacher")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise _refuse(path.parent, f"no {path.name} (expected a folder written by save_pretrained)")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(path, f"not readable JSON ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise _refuse(path, "expected a JSON object")
    return config


@dataclass(frozen=True)
class DiffusersFolder:
    """A diffusers folder whose configs passed every check: the UNet's config, the scheduler's table as a
    schedule, and what the UNet predicts in fewstep's terms (eps, v or x)."""

    path: Path
    unet: dict[str, Any]
    schedule: TabulatedSchedule
    prediction: str

    @property
    def num_class_embeds(self) -> int | None:
        return self.unet.get("num_class_embeds")

    @property
    def text(self) -> bool:
        """A UNet2DConditionModel: conditioned on captions' token states."""
        return is_text_unet(self.unet)


def read_folder(text: str) -> DiffusersFolder:
    """The folder ``text`` names, its UNet and scheduler configs checked; a one-line error otherwise."""
    path = Path(text)
    if not path.exists():
        if HUB_ID.fullmatch(text):
            raise _refuse(text, "no such folder; fewstep reads only local folders (it does not download from the "
                                "Hugging Face hub): save_pretrained the pipeline to a folder and pass that")
        raise _refuse(text, "no such folder")
    if not path.is_dir():
        raise _refuse(path, "a file; expected a folder written by save_pretrained")
    if (path / "model_index.json").is_file():
        latent = [name for name in LATENT if name in _read_json(path / "model_index.json")]
        if latent:
            raise _refuse(path, f"a latent diffusion pipeline (it has a {latent[0]}); fewstep distils UNets that "
                                "denoise the data itself")
    if not ((path / "unet").is_dir() and (path / "scheduler").is_dir()):
        raise _refuse(path, "expected a pipeline folder (model_index.json, unet/, scheduler/) or a unet/ + scheduler/ pair")
    unet = _check_unet(path / "unet", _read_json(path / "unet" / "config.json"))
    if not any((path / "unet" / name).is_file() for name in WEIGHTS):
        raise _refuse(path / "unet", f"no {WEIGHTS[0]}; fewstep loads weights only from safetensors (a pickled .bin can "
                                     "run code), which save_pretrained writes")
    schedule, prediction = _check_scheduler(path / "scheduler", _read_json(path / "scheduler" / "scheduler_config.json"))
    return DiffusersFolder(path, unet, schedule, prediction)


def _check_unet(where: Path, config: dict[str, Any]) -> dict[str, Any]:
    kind = config.get("_class_name")
    if kind not in (UNET, TEXT_UNET):
        raise _refuse(where, f"unsupported model class {kind!r}; expected a {UNET} or a {TEXT_UNET}")
    if kind == TEXT_UNET:
        _check_text_unet(where, config)
    if config.get("time_embedding_type", "positional") != "positional":
        raise _refuse(where, f"time_embedding_type {config['time_embedding_type']!r}; fewstep calls the UNet at "
                             "continuous times, which needs the positional embedding")
    if config.get("class_embed_type") is not None:
        raise _refuse(where, f"class_embed_type {config['class_embed_type']!r}; expected none (class labels through "
                             "num_class_embeds)")
    channels_in, channels_out = config.get("in_channels", 3), config.get("out_channels", 3)
    if channels_out == 2 * channels_in:
        raise _refuse(where, f"{channels_out} output channels for {channels_in} input channels: a learned-variance "
                             "UNet, which fewstep does not support")
    if channels_out != channels_in:
        raise _refuse(where, f"{channels_out} output channels for {channels_in} input channels; expected as many")
    return config


def _check_text_unet(where: Path, config: dict[str, Any]) -> None:
    """A UNet2DConditionModel conditioned on captions alone: fewstep gives it token states and their mask,
    nothing else (no labels, no pooled or added embeddings, no image inputs)."""
    if config.get("num_class_embeds") is not None or config.get("class_embed_type") is not None:
        raise _refuse(where, "a UNet2DConditionModel with class embeddings; fewstep conditions a UNet2DConditionModel on "
                             "captions alone (class labels need a UNet2DModel with num_class_embeds)")
    if config.get("addition_embed_type") is not None:
        raise _refuse(where, f"addition_embed_type {config['addition_embed_type']!r} (SDXL-style added embeddings); "
                             "fewstep gives the UNet token states and their mask only")
    if config.get("encoder_hid_dim_type") not in (None, "text_proj"):
        raise _refuse(where, f"encoder_hid_dim_type {config['encoder_hid_dim_type']!r}; expected none or text_proj "
                             "(token states of the text encoder)")
    if config.get("time_cond_proj_dim") is not None:
        raise _refuse(where, "time_cond_proj_dim (an LCM-style guidance embedding), which fewstep does not fill")


def _check_scheduler(where: Path, config: dict[str, Any]) -> tuple[TabulatedSchedule, str]:
    kind = config.get("_class_name")
    if kind not in SCHEDULERS:
        raise _refuse(where, f"unsupported scheduler {kind!r}; expected a DDPMScheduler or DDIMScheduler (a variance-"
                             "preserving process given by betas; not flow matching or variance exploding)")
    if config.get("trained_betas") is None and config.get("beta_schedule", "linear") not in BETA_SCHEDULES:
        raise _refuse(where, f"beta_schedule {config['beta_schedule']!r}; expected {', '.join(BETA_SCHEDULES)} or trained_betas")
    prediction = PREDICTIONS.get(config.get("prediction_type", "epsilon"))
    if prediction is None:
        raise _refuse(where, f"prediction_type {config['prediction_type']!r}; expected {', '.join(PREDICTIONS)}")
    if str(config.get("variance_type", "fixed_small")).startswith("learned"):
        raise _refuse(where, f"variance_type {config['variance_type']!r}: learned variance, which fewstep does not support")
    # The betas exactly as diffusers' own class builds them (float32), then ᾱ in float64 (docs/math.md §12).
    try:
        betas = getattr(diffusers("teacher"), kind).from_config(config).betas
        schedule = TabulatedSchedule(betas.double())
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise _refuse(where, f"its betas give no usable schedule ({_first_line(exc)})") from None
    if prediction == "eps" and float(schedule.alphas_cumprod[-1]) == 0.0:
        raise _refuse(where, "zero terminal SNR (rescale_betas_zero_snr) with epsilon prediction: x̂ = (z − σ ε̂)/α "
                             "divides by α = 0 at t = 1; such a UNet needs v_prediction or sample")
    return schedule, prediction


def check_data(folder: DiffusersFolder, dataset: Dataset, null_class: int | None = None) -> list[int] | None:
    """The UNet fits the data (channels, side, classes); returns :func:`class_index`."""
    unet, shape = folder.unet, tuple(dataset.shape)
    channels, side = unet.get("in_channels", 3), unet.get("sample_size")
    sides = None if side is None else tuple(side) if isinstance(side, (list, tuple)) else (side, side)
    if len(shape) != 3 or shape[0] != channels or (sides is not None and shape[1:] != sides):
        wanted = [channels, *(sides or ("H", "W"))]
        raise _refuse(folder.path, f"the UNet takes images of shape {wanted}; the data has examples of shape {list(shape)}")
    if folder.text and dataset.train_captions is None:
        raise _refuse(folder.path, f"a {TEXT_UNET} reads captions; the data {dataset.name!r} has none (use captioned "
                                   "data: digits-text, a folder with metadata.jsonl, an .npz with captions)")
    return None if folder.text else class_index(folder.num_class_embeds, dataset.num_classes, null_class)


def check_text(folder: DiffusersFolder, text_encoder: str) -> None:
    """The text encoder's token states have the width the UNet2DConditionModel reads."""
    dim = prompt_bank(text_encoder).dim
    if text_width(folder.unet) != dim:
        raise UserError(f"the teacher's UNet2DConditionModel reads token states of width {text_width(folder.unet)} "
                        f"(cross_attention_dim, or encoder_hid_dim when it projects them); the text encoder "
                        f"{text_encoder!r} gives {dim}", arg="text_encoder")


def own_unet(folder: DiffusersFolder, config: TrainConfig) -> bool:
    """Whether the student is the teacher's own UNet: backbone diffusers-unet with the teacher's config."""
    return config.model.name == "diffusers-unet" and config.model.kwargs == init_args(folder.unet)


def check_student(folder: DiffusersFolder, config: TrainConfig, dataset: Dataset) -> list[int] | None:
    """:func:`check_data`, and the student's start, conditioning and guidance fit the UNet."""
    if config.init == "teacher" and not own_unet(folder, config):
        raise UserError("a student starts from a diffusers teacher's weights only as the teacher's own UNet (model "
                        "diffusers-unet, the default for such a teacher); pass none to train another backbone from scratch", arg="init")
    index = check_data(folder, dataset, config.teacher_null_class)
    if folder.text != (config.cond == "text"):
        raise UserError(f"the diffusers teacher is conditioned on captions, so its student must be too; train it with cond text"
                        if folder.text else "the diffusers teacher reads no captions (a UNet2DModel); train its student with "
                        "cond none or class", arg="cond")
    if folder.text:
        check_text(folder, config.text_encoder)
        if config.guidance_range is not None and own_unet(folder, config):
            raise UserError("a w-conditioned student needs fewstep's unet (its embedding of w); the teacher's own "
                            "UNet2DConditionModel has no input for w: pass --model unet, or distil one student per w",
                            arg="guidance_range")
        return None
    null = has_null(index, dataset.num_classes)
    if config.cond == "class" and index is None:
        raise UserError("the diffusers teacher is unconditional, so its student cannot be class-conditional; train it with "
                        "cond none", arg="cond")
    if config.cond == "none" and index is not None and not null:
        raise UserError("the diffusers teacher has no null class to serve an unconditional student; train it with cond class",
                        arg="cond")
    if config.cond == "none" and index is not None and own_unet(folder, config):
        raise UserError("the student is the teacher's own class-conditional UNet, so it is class-conditional too; train it "
                        "with cond class, or give it another backbone (model unet or mlp)", arg="cond")
    if (config.guidance is not None or config.guidance_range is not None) and index is not None and not null:
        raise UserError(f"the teacher's UNet has {len(index)} class embeddings for {len(index)} classes and no null class, "
                        "so it cannot be guided", arg="guidance")
    return index


def load_unet(folder: DiffusersFolder) -> nn.Module:
    try:
        cls = getattr(diffusers("teacher"), TEXT_UNET if folder.text else UNET)
        unet = cls.from_pretrained(folder.path / "unet", local_files_only=True, use_safetensors=True, torch_dtype=torch.float32,
                                   low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:  # what diffusers raises on missing or damaged weights
        raise _refuse(folder.path / "unet", f"cannot load the UNet's weights ({_first_line(exc)})") from None
    return unet.eval().requires_grad_(False)


def _denoiser(folder: DiffusersFolder, dataset: Dataset, index: list[int] | None, device: torch.device | str,
              text_encoder: str) -> Denoiser:
    backbone: nn.Module = DiffusersUNet(load_unet(folder), folder.schedule.steps, index, dataset.num_classes)
    if folder.text:  # captions reach it as prompt-bank ids, as a fewstep text run's do (docs/math.md §13)
        backbone = TextConditioned(backbone, prompt_bank(text_encoder))
    return Denoiser(backbone, folder.schedule, prediction=folder.prediction).to(device)  # type: ignore[arg-type]


def diffusers_teacher(path: str | Path, dataset: Dataset, *, null_class: int | None = None, clip_x: bool | None = None,
                      text_encoder: str = "minilm", device: torch.device | str = "cpu") -> DenoiserLike:
    """The diffusers folder ``path`` as a frozen denoiser on its tabulated schedule, checked against ``dataset``;
    ``null_class`` as :func:`class_index` reads it. Its ``cond`` is ``{"class": labels}`` with the data's labels,
    or for a UNet2DConditionModel ``{"caption": ids}`` in ``prompt_bank(text_encoder)`` (``prompt_cond``).
    Its x̂ is clipped to [−1, 1] as a CD teacher's would be (``clip_x`` None: for ε-prediction, :func:`clips_x`),
    so that every sampler samples it as distillation sees it."""
    return _checked_teacher(read_folder(str(path)), dataset, null_class, clip_x, text_encoder, device)


def _checked_teacher(folder: DiffusersFolder, dataset: Dataset, null_class: int | None, clip_x: bool | None,
                     text_encoder: str, device: torch.device | str) -> DenoiserLike:
    index = check_data(folder, dataset, null_class)
    if folder.text:
        check_text(folder, text_encoder)
    denoiser = _denoiser(folder, dataset, index, device, text_encoder)
    return Clipped(denoiser) if clips_x(clip_x, denoiser, dataset) else denoiser


def teacher_run(path: str | Path, student: Run, dataset: Dataset) -> Run:
    """The diffusers teacher at ``path`` as ``student``'s teacher run: sampled as the student saw it in CD (its
    null class, text encoder and clip), so that its training-free samplers are the student's baselines."""
    from .run import Run

    folder = read_folder(str(path))
    config = student.config
    denoiser = _checked_teacher(folder, dataset, config.teacher_null_class, student.card.teacher_clip, config.text_encoder,
                                student.device)
    teacher_config = dataclasses.replace(config, objective="diffusion", teacher="", init="none", guidance=None,
                                         guidance_range=None, prediction=folder.prediction)
    card = RunCard(data=student.card.data, data_shape=student.card.data_shape, normaliser=student.card.normaliser,
                   num_classes=student.card.num_classes, class_names=student.card.class_names)
    return Run.of(denoiser, teacher_config, card, workdir=folder.path, device=str(student.device))


@TEACHER_SOURCES.register(SOURCE)
def _source(arg: str, ctx: SourceContext) -> Teacher:
    folder = read_folder(arg)
    denoiser = _denoiser(folder, ctx.dataset, check_student(folder, ctx.config, ctx.dataset), ctx.device, ctx.config.text_encoder)
    weights = None
    if ctx.config.init == "teacher":  # the student is the teacher's own UNet (check_student), so the names match
        weights = {k: v.detach().clone() for k, v in denoiser.backbone.state_dict().items()}
    return Teacher(denoiser, weights, {"teacher": ctx.config.teacher})


def _student_settings(arg: str, config: TrainConfig, dataset: Dataset) -> TrainConfig:
    """The student takes the teacher's table as its schedule, and its conditioning from the UNet ("auto":
    text for a UNet2DConditionModel, class for a class-conditional UNet2DModel, none otherwise). A diffusers-unet student given no UNet config is the
    teacher's own class and config (docs/math.md §12); started from its weights, it keeps the teacher's prediction
    type, except that an ε teacher's student predicts v (its x̂ = α z − σ v̂ does not divide by α ≈ 0 at t = 1)."""
    folder = read_folder(arg)
    cond = config.cond if config.cond != "auto" else "text" if folder.text else "class" if folder.num_class_embeds else "none"
    config = dataclasses.replace(config, schedule=folder.schedule.to_dict(), cond=cond)
    if config.model.name == "diffusers-unet" and not config.model.kwargs:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, kwargs=init_args(folder.unet)))
    if config.init == "teacher" and own_unet(folder, config):
        config = dataclasses.replace(config, prediction="v" if folder.prediction == "eps" else folder.prediction)
    check_student(folder, config, dataset)
    return config


STUDENT_SETTINGS[SOURCE] = _student_settings
