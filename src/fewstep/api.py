"""The Python entry point: ``fewstep.load(run).sample(n, steps=…, sampler=…)``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .build import build_denoiser
from .config import TrainConfig
from .data import Normaliser
from .errors import UserError
from .param import Denoiser
from .samplers import VarianceTable, data_free_variance
from .sampling import generate
from .train.checkpoint import load_checkpoint
from .train.dist import resolve_device

VARIANCES = ("table", "data_free")


class Run:
    """A trained run loaded for sampling: the EMA weights, the data's units and the sampler defaults."""

    def __init__(self, workdir: Path | str, device: str = "auto") -> None:
        ckpt = load_checkpoint(workdir)
        self.workdir = Path(workdir)
        self.config: TrainConfig = ckpt.config
        self.step = ckpt.step
        self.extra: dict[str, Any] = ckpt.extra
        self.device = resolve_device(device)
        self.shape = tuple(self.extra["data_shape"])
        self.normaliser = Normaliser.from_dict(self.extra["normaliser"])
        self.denoiser: Denoiser = build_denoiser(self.config, self.shape).to(self.device)
        self.denoiser.backbone.load_state_dict(ckpt.ema)
        self.denoiser.eval()
        table = self.extra.get("variance_table")
        self.variance_table = VarianceTable.from_dict(table) if table else None

    @property
    def is_student(self) -> bool:
        return self.config.objective != "diffusion"

    @property
    def default_sampler(self) -> str:
        return "consistency" if self.is_student else "ddim"

    @property
    def default_steps(self) -> int:
        return int(self.extra.get("student_steps", 64))

    def sampler_options(self, sampler: str, variance: str = "table") -> dict[str, Any]:
        if sampler != "addim":
            return {}
        if variance not in VARIANCES:
            raise UserError(f"--variance: expected one of {', '.join(VARIANCES)}, got {variance!r}")
        if variance == "table" and self.variance_table is not None:
            return {"variance": self.variance_table}
        return {"variance": data_free_variance(self.denoiser.schedule)}

    def sample_tensor(
        self, n: int, *, steps: int | None = None, sampler: str | None = None, seed: int = 0,
        variance: str = "table", batch_size: int | None = None, clip_x: bool = False,
    ) -> Tensor:
        """``n`` samples in model units (standardised points, images in [−1, 1])."""
        sampler = self.default_sampler if sampler is None else sampler
        steps = self.default_steps if steps is None else steps
        return generate(
            self.denoiser, n, self.shape, sampler=sampler, steps=steps, seed=seed,
            device=self.device, batch_size=batch_size, clip_x=clip_x, **self.sampler_options(sampler, variance),
        )

    def sample(self, n: int, **kwargs: Any) -> np.ndarray:
        """``n`` samples in the data's own units: points un-standardised, images uint8 [N, H, W, C]."""
        return self.normaliser.to_data(self.sample_tensor(n, **kwargs).numpy())


def load(run: Path | str, device: str = "auto") -> Run:
    return Run(run, device)
