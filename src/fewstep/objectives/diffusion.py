"""The diffusion (teacher) objective: the v-loss ‖v̂ − v‖² (docs/math.md §2), mean over dimensions."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from ..batch import Batch
from ..cond import Cond, drop_condition
from ..param import Denoiser, expand_like
from ..samplers import SamplerSpec, VarianceTable
from ..schedules import t_min
from .common import LossOutput, ObjectiveBase, per_example_mean, stratified_times


class DiffusionObjective(ObjectiveBase):
    name = "diffusion"

    def __init__(self, variance_eta: float = 0.75, variance_examples: int = 2000, sampler_steps: int = 64,
                 cond_dropout: float = 0.0, nulls: Mapping[str, int | float] | None = None) -> None:
        if cond_dropout > 0 and not nulls:
            raise ValueError("condition dropout needs the null value of every condition key")
        self.cond_dropout, self.nulls = cond_dropout, dict(nulls or {})
        self.variance_eta = variance_eta
        self.variance_examples = variance_examples
        self.sampler = SamplerSpec("ddim", sampler_steps)

    def __call__(
        self, denoiser: Denoiser, x: Tensor, cond: Cond | None, step: int, generator: torch.Generator
    ) -> LossOutput:
        t = stratified_times(x.shape[0], generator).clamp_min(t_min(denoiser.schedule)).to(x.device)  # [B], ≥ a table's t_0
        eps = torch.randn(x.shape, generator=generator).to(x.device)             # [B, ...]
        alpha, sigma = (expand_like(a, x) for a in denoiser.schedule.alpha_sigma(t))
        z_t = alpha * x + sigma * eps
        cond = drop_condition(cond, self.cond_dropout, self.nulls, generator)  # after t and ε: p = 0 draws nothing
        pred = denoiser(z_t, t, cond)
        # v̂ from x̂ and ε̂ serves every parameterisation; for v-prediction it is the raw output.
        v_hat = alpha * pred.eps_hat - sigma * pred.x_hat
        v = alpha * eps - sigma * x
        per_example = per_example_mean((v_hat - v).square())                     # [B]
        return LossOutput(per_example.mean(), per_example.detach(), t)

    def finalize(self, ema: Denoiser, heldout: Batch) -> dict[str, Any]:
        """Measure the aDDIM variance table (math.md §4 c) on held-out data, stored with the checkpoint."""
        ema.eval()
        device = next(ema.parameters()).device
        held = heldout.head(self.variance_examples).to(device)
        generator = torch.Generator(device=device).manual_seed(0)
        table = VarianceTable.measure(ema, held.x, eta=self.variance_eta, cond=held.cond, generator=generator)
        return {"variance_table": table.to_dict()}
