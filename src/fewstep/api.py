"""The Python entry point: ``fewstep.load(run).sample(n, steps=…, sampler=…)``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
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
        if self.config.objective == "ect":
            return "ect"
        return "consistency" if self.is_student else "ddim"

    @property
    def default_steps(self) -> int:
        if self.config.objective == "ect":
            return 2  # ECT's 2-step sampling (SPEC §7 step 6)
        return int(self.extra.get("student_steps", 64))

    def sampler_options(self, sampler: str, variance: str = "table", final: str = "addim") -> dict[str, Any]:
        if sampler == "ect":
            return {"u_mid": self.extra["u_mid"]} if "u_mid" in self.extra else {}  # scaled to this run's σ_d
        if sampler != "addim":
            return {}
        if final not in ("addim", "xhat"):
            raise UserError(f"--sampler: aDDIM's last step is 'addim' or 'xhat', got {final!r}")
        options = {"final": "x_hat" if final == "xhat" else "addim"}
        if variance not in VARIANCES:
            raise UserError(f"--variance: expected one of {', '.join(VARIANCES)}, got {variance!r}")
        if variance == "table" and self.variance_table is not None:
            return {**options, "variance": self.variance_table}
        return {**options, "variance": data_free_variance(self.denoiser.schedule)}

    def sample_tensor(
        self, n: int, *, steps: int | None = None, sampler: str | None = None, seed: int = 0,
        variance: str = "table", batch_size: int | None = None, clip_x: bool = False, final: str = "addim",
    ) -> Tensor:
        """``n`` samples in model units (standardised points, images in [−1, 1])."""
        sampler = self.default_sampler if sampler is None else sampler
        steps = self.default_steps if steps is None else steps
        return generate(
            self.denoiser, n, self.shape, sampler=sampler, steps=steps, seed=seed,
            device=self.device, batch_size=batch_size, clip_x=clip_x, **self.sampler_options(sampler, variance, final),
        )

    def sample(self, n: int, **kwargs: Any) -> np.ndarray:
        """``n`` samples in the data's own units: points un-standardised, images uint8 [N, H, W, C]."""
        return self.normaliser.to_data(self.sample_tensor(n, **kwargs).numpy())


def load(run: Path | str, device: str = "auto") -> Run:
    return Run(run, device)
