"""Training configuration: one frozen dataclass, named presets per data set, flags override.

The resolved config is saved as ``config.json`` beside every checkpoint, so a run can be rebuilt
from its folder alone. Only :mod:`fewstep.runs` (and the CLI, which fills it from flags) reads it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError


@dataclass(frozen=True)
class ModelConfig:
    """The backbone: a registered name (``mlp``, ``unet``) with the fields below, or an importable class
    ``"package.module:Class"`` built as ``Class(**kwargs)`` (a user's own ``nn.Module``)."""

    name: str = "mlp"                       # "mlp" | "unet" | "module:Class"
    width: int = 128
    depth: int = 4                          # MLP residual blocks
    mults: tuple[int, ...] = (1, 2)         # UNet width multipliers per level
    blocks: int = 1                         # UNet residual blocks per level
    attn_res: int = 4                       # UNet self-attention at sides ≤ this
    dropout: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)  # constructor arguments of a "module:Class" backbone


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a run: data, objective, backbone, schedule, optimisation, and the settings
    of multistep consistency (cd/ct, docs/math.md §5) and ECT (ect/mect, §7). Build one from a preset
    (:func:`preset_for`), change fields with :func:`override` or ``dataclasses.replace``; a student of a
    trained teacher starts from :func:`student_config`."""

    data: str = "moons"
    data_loader: str = "auto"               # memory | stream | auto (stream above 1 GiB); built-ins: memory
    workers: int = 2                        # DataLoader processes decoding streamed data
    objective: str = "diffusion"
    cond: str = "auto"                      # "none" | "class" (the data's labels) | "text" (its captions) | "auto":
                                            # text for captioned data, else class for labelled data
    text_encoder: str = "minilm"            # cond "text": "minilm" | "tiny:TOKENIZER_JSON" | "module:Factory" (§13)
    cond_dropout: float = 0.2               # P(label → null class, caption → "") while training a conditional teacher (§10);
                                            # 0.2 over 0, 0.05, 0.1 by ablation (benchmarks/results/guidance.md)
    model: ModelConfig = field(default_factory=ModelConfig)
    prediction: str = "v"                  # what the backbone predicts: v | eps | x
    schedule: dict[str, Any] = field(default_factory=lambda: {"name": "cosine"})
    iters: int = 6000
    batch: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 200
    grad_clip: float = 1.0
    ema_halflife_frac: float = 0.05         # EMA half-life as a fraction of the run (D)
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    eval_every: int = 0                     # 0: only at the end
    eval_samples: int = 2000
    eval_steps: int = 64
    ckpt_every: int = 1000
    log_every: int = 50
    max_bad_steps: int = 0                  # non-finite steps skipped before the run stops (--skip-nonfinite)
    eta: float = 0.75                       # η: aDDIM's variance fraction (docs/math.md §4 a, c)
    # Multistep consistency (docs/math.md §5); used when objective is "cd" or "ct".
    teacher: str = ""                       # teacher run folder, "ideal" (gaussians8's exact denoiser) or "diffusers:PATH"
    teacher_null_class: int | None = None   # a diffusers teacher's null class index (None: K of K + 1 embeddings)
    teacher_clip: bool | None = None        # cd: clip the teacher's x̂ to [−1, 1]; None: for an ε-prediction teacher of images (§12)
    student_steps: int = 4                  # S
    init: str = "teacher"                   # "teacher" | "none"
    guidance: float | None = None           # cd: distil the teacher guided at this w (docs/math.md §10)
    guidance_range: tuple[float, float] | None = None  # cd: a w-conditioned student, w ~ U[lo, hi] (§10)
    guidance_interval: tuple[float, float] | None = None  # cd: the teacher guided only for t inside (§10)
    teacher_sampler: str = "addim"          # "addim" | "ddim" | "dpm2" (DPM-Solver++(2S): two teacher calls)
    n0: int = 128                           # N_0; fixed N = 128 (N_0 = N_1) measured better than the
    n1: int = 128                           # paper's 64 → 1280 anneal for short runs (docs/math.md §5)
    anneal_frac: float = 0.5                # I_anneal as a fraction of iters
    huber_c: float = 1e-3                   # c of the pseudo-Huber loss (mean over dimensions)
    weighting: str = "vspace"               # "vspace" | "snr1"
    # Easy Consistency Tuning (docs/math.md §7); objective "ect" (1–2 step sampler) or "mect" (multistep ECT:
    # S = student_steps, with MCM's target, weighting and huber_c). Values are ECT's, for σ_d = 0.5 data.
    ect_p_mean: float = -1.1                # P_mean of u ~ LogNormal, shifted by ln(σ_d/0.5) at use
    ect_p_std: float = 2.0                  # P_std
    ect_q: float = 2.0                      # q: r = max(0, u·(1 − q^−(stage+1)·g(u)))
    ect_k: float = 8.0                      # k: g(u) = 1 + k·sigmoid(−b u)
    ect_b: float = 1.0                      # b
    ect_stages: int = 8                     # iters_per_stage = iters / ect_stages
    ect_u_mid: float = 0.821                # the 2-step sampler's re-noise level, scaled by σ_d/0.5 at use
    ect_weighting: str = "ect"              # "ect": 1/u² + 1/σ_d² | "inv_gap": 1/(u − r)
    ect_c: float | None = None              # pseudo-Huber c; None: 0.06/√d ("ect"), 0 ("inv_gap")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        model = dict(d.pop("model", {}))
        if "mults" in model:
            model["mults"] = tuple(model["mults"])
        for key in ("guidance_range", "guidance_interval"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        for kind, given in ((cls, d), (ModelConfig, model)):
            unknown = set(given) - {f.name for f in dataclasses.fields(kind)}
            if unknown:
                raise UserError(f"config: unknown fields {sorted(unknown)}")
        return cls(model=ModelConfig(**model), **d)


POINTS = TrainConfig()
PRESETS: dict[str, TrainConfig] = {
    "points": POINTS,
    # 8×8 digits use the MLP on flattened pixels: on a 2-core CPU it trains ~10× faster than the
    # UNet (30 vs 3 it/s at batch 128, measured), which is what lets the demo and study fit.
    "digits": TrainConfig(
        data="digits",
        model=ModelConfig(name="mlp", width=512, depth=4, dropout=0.1),
        iters=4000, batch=128, lr=1e-3, warmup=200, eval_steps=64, eval_samples=500,
    ),
    "mnist": TrainConfig(
        data="mnist",
        model=ModelConfig(name="unet", width=64, mults=(1, 2, 2), blocks=2, attn_res=8, dropout=0.1),
        iters=30000, batch=128, lr=1e-3, warmup=500, eval_every=5000, eval_steps=64, eval_samples=2000,
        ckpt_every=2000, precision="fp32",
    ),
    # Captions need the UNet's cross-attention (at 4×4, with self-attention; docs/math.md §13): the smallest
    # one, at a smaller batch, is what fits a CPU (benchmarks/results/text.md has its step time).
    "digits-text": TrainConfig(
        data="digits-text",
        model=ModelConfig(name="unet", width=32, mults=(1, 2), blocks=1, attn_res=4, dropout=0.1),
        iters=3000, batch=64, lr=1e-3, warmup=200, eval_steps=64, eval_samples=500,
    ),
    "images": TrainConfig(
        model=ModelConfig(name="unet", width=64, mults=(1, 2, 2), blocks=2, attn_res=8, dropout=0.1),
        iters=20000, batch=128, lr=1e-3, warmup=500, eval_steps=64, eval_samples=1000, ckpt_every=2000,
        precision="fp32",
    ),
}

PRESETS["mnist-text"] = dataclasses.replace(PRESETS["mnist"], data="mnist-text")  # its UNet has cross-attention at 8×8 and below


# Fields only a student's objective reads; a diffusion teacher is the same run whatever they hold.
STUDENT_ONLY = ("teacher", "teacher_null_class", "teacher_clip", "student_steps", "init", "guidance", "guidance_range", "guidance_interval", "teacher_sampler", "n0", "n1", "anneal_frac", "huber_c", "weighting",
                "ect_p_mean", "ect_p_std", "ect_q", "ect_k", "ect_b", "ect_stages", "ect_u_mid", "ect_weighting", "ect_c")


def same_settings(a: TrainConfig, b: TrainConfig) -> bool:
    """Whether two configs describe the same run: the device does not count, nor, for a diffusion teacher,
    the student-only fields (so a new student default does not make every teacher stale), nor ``cond``
    when one of them says "auto"."""
    ignored = {"device", *(STUDENT_ONLY if a.objective == b.objective == "diffusion" else ())}
    if "auto" in (a.cond, b.cond):  # "auto" becomes the same concrete choice on the same data
        ignored.add("cond")
    strip = lambda c: {k: v for k, v in c.to_dict().items() if k not in ignored}
    return strip(a) == strip(b)


def student_config(teacher: TrainConfig, teacher_dir: str, objective: str, **fields: Any) -> TrainConfig:
    """A few-step student of ``teacher``: its data, backbone and schedule; a quarter of its iterations at
    a fifth of its learning rate (from scratch, ``init='none'``: the teacher's rate); EMA half-life 10%
    of the run (docs/math.md §5). ``fields`` override any of it."""
    init = fields.pop("init", "teacher")
    base = dataclasses.replace(
        teacher, objective=objective, teacher=str(teacher_dir), init=init, iters=max(1, teacher.iters // 4),
        lr=teacher.lr / 5 if init == "teacher" else teacher.lr, warmup=100, ema_halflife_frac=0.1, eval_every=0,
        eval_samples=min(teacher.eval_samples, 500),
    )
    return dataclasses.replace(base, **fields)


def preset_for(data: str, kind: str, shape: tuple[int, ...] | None = None) -> TrainConfig:
    """The named preset for a built-in data set, else the one for its kind (points or images); images too
    small for the images preset's UNet (a bottleneck under 2×2) get the digits preset's MLP instead."""
    base = PRESETS.get(data) or PRESETS["points" if kind == "points" else "images"]
    if base.model.name == "unet" and shape is not None and min(shape[-2:]) < 2 ** len(base.model.mults):
        base = dataclasses.replace(base, model=PRESETS["digits"].model)
    return dataclasses.replace(base, data=data)


def override(config: TrainConfig, **flags: Any) -> TrainConfig:
    """Replace fields whose flag was given (value not None); ``model`` takes ``model_name`` etc."""
    model_flags = {k[len("model_"):]: v for k, v in flags.items() if k.startswith("model_") and v is not None}
    top = {k: v for k, v in flags.items() if not k.startswith("model_") and v is not None}
    model = dataclasses.replace(config.model, **model_flags)
    if "name" in model_flags and model_flags["name"] != config.model.name:
        # A different backbone family starts from its own defaults, not the other one's widths.
        default = PRESETS["points" if model_flags["name"] == "mlp" else "images"].model
        model = dataclasses.replace(default, **model_flags)
    return dataclasses.replace(config, model=model, **top)
