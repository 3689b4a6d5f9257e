"""The Python entry point: ``fewstep.load(run).sample(n, steps=…, sampler=…)``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..cond import Cond
from ..errors import UserError
from ..guidance import AtGuidance, Guided
from ..param import CountingDenoiser, Denoiser, DenoiserLike
from ..samplers import SamplerSpec, parse_sampler, resolve_variance
from ..samplers.addim import run_defaults
from ..samplers.spec import text_option
from ..sampling import generate
from ..train.dist import resolve_device
from .build import cond_nulls, prompt_cond
from .card import DIFFUSION_STEPS, RunCard
from .config import TrainConfig
from .folder import open_denoiser


class Run:
    """A trained run loaded for sampling: the EMA weights, the data's units and the run's own sampler."""

    def __init__(self, workdir: Path | str, device: str = "auto", backbone: nn.Module | None = None, arg: str = "run") -> None:
        self.workdir = Path(workdir)
        self.device = resolve_device(device)
        config, card, ckpt, denoiser = open_denoiser(workdir, arg=arg, backbone=backbone, device=self.device)
        self.config: TrainConfig = config
        self.card: RunCard = card
        self.step = ckpt.step
        self.denoiser: Denoiser = denoiser
        self.shape = tuple(card.data_shape)
        self.normaliser = card.normaliser

    @classmethod
    def of(cls, denoiser: DenoiserLike, config: TrainConfig, card: RunCard, *, workdir: Path | str, step: int = 0,
           device: str = "auto") -> "Run":
        """A Run around a denoiser that has no run folder (a diffusers teacher, whose training-free samplers
        are its students' baselines): ``workdir`` names where it came from."""
        run = cls.__new__(cls)
        run.workdir, run.device, run.config, run.card, run.step = Path(workdir), resolve_device(device), config, card, step
        run.denoiser = denoiser  # type: ignore[assignment]
        run.shape, run.normaliser = tuple(card.data_shape), card.normaliser
        return run

    @property
    def num_classes(self) -> int | None:
        """K for a class-conditional run (its null class is K), else None."""
        return self.card.num_classes if self.config.cond == "class" else None

    @property
    def is_text(self) -> bool:
        """Whether the run is conditioned on captions (``prompt=`` when sampling)."""
        return self.config.cond == "text"

    def prompt_cond(self, n: int, prompts: str | Sequence[str] | None) -> Cond | None:
        """The condition of ``n`` samples of ``prompts`` in turn (one prompt: all of them); None without prompts.
        "" is the unconditional model; a prompt of more than 256 tokens is cut there with a warning."""
        if prompts is None:
            return None
        if not self.is_text:
            raise UserError("this run is not conditioned on captions (trained without --cond text)", arg="prompt")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise UserError("expected one or more prompts (strings)", arg="prompt")
        return prompt_cond(self.config, [prompts[i % len(prompts)] for i in range(n)])

    def nulls(self) -> dict[str, int]:
        """The null value per condition key (guidance's unconditional call)."""
        return cond_nulls(self.config, self.card.num_classes)

    def class_cond(self, n: int, classes: Sequence[int | str] | None = None) -> Cond | None:
        """The condition of ``n`` samples of ``classes`` (indices, or names of class sub-folders) in turn
        (default: every class, balanced); None for an unconditional run; a caption-conditioned run's
        default is the empty prompt (the unconditional model)."""
        k = self.num_classes
        if k is None:
            if classes:
                raise UserError("this run is not class-conditional (trained without --cond class)", arg="class")
            return self.prompt_cond(n, "") if self.is_text else None
        labels = list(range(k)) if not classes else [self.class_index(c) for c in classes]
        bad = [c for c in labels if not 0 <= c < k]
        if bad:
            raise UserError(f"classes are 0…{k - 1} for this run, got {bad}", arg="class")
        return {"class": torch.tensor(labels, dtype=torch.long)[torch.arange(n) % len(labels)]}

    def class_index(self, name: int | str) -> int:
        """A class's index from its name (a class sub-folder's) or its index, as an int or a numeral."""
        names = self.card.class_names or ()
        if isinstance(name, str) and name in names:
            return names.index(name)
        try:
            return int(name)
        except ValueError:
            known = f"; its classes are {', '.join(names)}" if names else ""
            raise UserError(f"unknown class {name!r}{known}", arg="class") from None

    @property
    def guidance_range(self) -> tuple[float, float] | None:
        """(lo, hi) for a w-conditioned student (it serves any w in the range with one call per step)."""
        given = self.card.hyper.get("guidance_range")
        return None if given is None else (float(given[0]), float(given[1]))

    def guided(self, guidance: float | None, interval: tuple[float, float] | None = None,
               denoiser: DenoiserLike | None = None) -> DenoiserLike:
        """The run's denoiser (or ``denoiser``, e.g. a counting wrapper of it) guided at ``guidance`` = w
        (docs/math.md §10): a teacher by classifier-free guidance (2 calls per step), a w-conditioned student
        by its embedding of w (1 call; default: the range's lower end); unguided when None."""
        denoiser = denoiser or self.denoiser
        w_range = self.guidance_range
        if w_range is not None:
            w = w_range[0] if guidance is None else guidance
            if not w_range[0] <= w <= w_range[1]:
                raise UserError(f"this student was distilled for w in [{w_range[0]:g}, {w_range[1]:g}], got {w:g}", arg="guidance")
            if interval is not None:
                raise UserError("a w-conditioned student takes no guidance interval (it makes one call per step)", arg="guidance_interval")
            return AtGuidance(denoiser, w)
        if guidance is None:
            if interval is not None:
                raise UserError("a guidance interval needs a guidance weight (--guidance)", arg="guidance_interval")
            return denoiser
        if not self.nulls():
            raise UserError("guidance needs a conditional run (trained with --cond class or text)", arg="guidance")
        distilled_at = self.card.hyper.get("guidance")
        if distilled_at is not None:
            raise UserError(f"this student was distilled from its teacher guided at w = {distilled_at:g} and samples "
                            "without guidance", arg="guidance")
        if guidance < 0:
            raise UserError(f"expected a guidance weight ≥ 0, got {guidance}", arg="guidance")
        return Guided(denoiser, guidance, self.nulls(), interval)

    def nfe(self, sampler: str | SamplerSpec | None = None, steps: int | None = None, *,
            guidance: float | None = None, interval: tuple[float, float] | None = None) -> int:
        """Network evaluations per sample, counted on one sample: a guided step costs 2 (1 outside its
        interval, 1 at w ∈ {0, 1} and for a w-conditioned student)."""
        counter = CountingDenoiser(self.denoiser)
        self.sample_tensor(1, steps=steps, sampler=sampler, guidance=guidance, interval=interval, denoiser=counter)
        return counter.evaluations

    @property
    def is_student(self) -> bool:
        return self.card.is_student

    @property
    def sampler(self) -> SamplerSpec:
        """The run's own sampler and step count: S-step consistency for a multistep student, ECT's
        2-step sampler for ECT, DDIM for a teacher."""
        return self.card.sampler

    @property
    def default_sampler(self) -> str:
        return self.sampler.name

    @property
    def default_steps(self) -> int:
        return int(self.sampler.steps or DIFFUSION_STEPS)

    def spec(self, sampler: str | SamplerSpec | None = None, steps: int | None = None, *,
             variance: str | None = None, final: str | None = None) -> SamplerSpec:
        """A sampler spec for this run: the run's own when ``sampler`` is None; the run's own options (ECT's
        u_mid, scaled to this run's data) under a given spec of the same sampler; the run's step count when
        ``steps`` and the spec give none; ``variance`` and ``final`` set aDDIM's options by keyword."""
        own = self.sampler
        spec = own if sampler is None else sampler if isinstance(sampler, SamplerSpec) else parse_sampler(sampler)
        options = {**own.options, **spec.options} if spec.name == own.name else dict(spec.options)
        if spec.name == "addim":  # the keyword forms of "addim:VARIANCE:FINAL"
            if variance is not None:
                options["variance"] = text_option("addim", "variance", variance)
            if final is not None:
                options["final"] = final if final in ("addim", "x_hat") else text_option("addim", "final", final)
        if steps is None:
            steps = spec.steps or own.steps or DIFFUSION_STEPS
        return SamplerSpec(spec.name, steps, options).check()

    def sampler_options(self, spec: SamplerSpec) -> dict[str, Any]:
        """The spec's options as the sampler takes them: aDDIM's options the spec leaves out from its
        measured defaults for the step count (:data:`fewstep.samplers.addim.RUN_DEFAULTS`), its named v_t
        resolved to this run's table (math.md §4 c) or the data-free (b)."""
        options = dict(spec.options)
        if spec.name == "addim":
            given = options
            options = {**run_defaults(spec.steps or DIFFUSION_STEPS, self.card.variance_table is not None), **given}
            if "variance" in given and "eta" not in given:  # a named choice without η: the choice's own
                options.pop("eta")
            options["variance"] = resolve_variance(options["variance"], self.denoiser.schedule,
                                                   self.card.variance_table, options.pop("eta", None))
        return options

    def sample_tensor(
        self, n: int, *, steps: int | None = None, sampler: str | SamplerSpec | None = None, seed: int = 0,
        variance: str | None = None, batch_size: int | None = None, clip_x: bool = False, final: str | None = None,
        cond: Cond | None = None, classes: Sequence[int] | None = None, prompt: str | Sequence[str] | None = None,
        guidance: float | None = None, interval: tuple[float, float] | None = None, denoiser: DenoiserLike | None = None,
    ) -> Tensor:
        """``n`` samples in model units (standardised points, images in [−1, 1]). A class-conditional run
        samples ``cond``, else ``classes`` in turn, else every class balanced; a caption-conditioned run
        ``cond``, else ``prompt`` (one, or several in turn), else "" (unconditional); ``guidance`` = w guides
        it (2 network calls per step, docs/math.md §10)."""
        spec = self.spec(sampler, steps, variance=variance, final=final)
        resolved = SamplerSpec(spec.name, spec.steps, self.sampler_options(spec))
        if cond is None:
            cond = self.prompt_cond(n, prompt) if prompt is not None else self.class_cond(n, classes)
        return generate(self.guided(guidance, interval, denoiser), n, self.shape, resolved, seed=seed, device=self.device,
                        batch_size=batch_size, cond=cond, clip_x=clip_x)

    def sample(self, n: int, **kwargs: Any) -> np.ndarray:
        """``n`` samples in the data's own units: points un-standardised, images uint8 [N, H, W, C]."""
        return self.normaliser.to_data(self.sample_tensor(n, **kwargs).numpy())


def load(run: Path | str, device: str = "auto", backbone: nn.Module | None = None) -> Run:
    """Open the run folder ``run`` for sampling (``fewstep.load("runs/moons").sample(1000)``).

    ``device``: auto (CUDA if available), cpu or cuda. ``backbone``: an instance of the run's backbone
    class, for a run made from Python with a class fewstep cannot import or rebuild; its weights are
    loaded from the run. The folder is checked like any untrusted input: one-line errors, nothing raw."""
    return Run(run, device, backbone)
