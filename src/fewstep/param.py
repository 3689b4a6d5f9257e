"""The `Denoiser`: a backbone plus a schedule and a parameterisation (docs/math.md §2).

Notation (math.md → code):
    F(z_t, t, cond)   ``backbone``   raw network output
    x̂, ε̂, v̂          ``x_hat``, ``eps_hat``, ``v_hat``
    z_t               ``z_t``        noisy input, z_t = α_t x + σ_t ε

Samplers and objectives see only denoisers: anything callable as ``denoiser(z_t, t, cond)`` that
returns a :class:`Prediction` and has a ``schedule`` works everywhere (our MLP/UNet, a foreign
``nn.Module``, an exact closed-form denoiser such as the Gaussian-mixture teacher, a teacher re-timed
to another schedule or with its x̂ clipped).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .cond import Cond
from .schedules import Schedule

PredictionType = Literal["v", "eps", "x"]
PREDICTION_TYPES = ("v", "eps", "x")


@dataclass
class Prediction:
    x_hat: Tensor    # [B, ...] estimate of E[x | z_t]
    eps_hat: Tensor  # [B, ...] the matching noise estimate, ε̂ = (z_t − α_t x̂)/σ_t
    x_hat_cond: Tensor | None = None  # a guided prediction's conditional x̂_c (aDDIM's v_t, docs/math.md §10)


class DenoiserLike(Protocol):
    schedule: Schedule

    def __call__(self, z_t: Tensor, t: Tensor, cond: Cond | None = None) -> Prediction: ...


def expand_like(a: Tensor, ref: Tensor) -> Tensor:
    """[B] → [B, 1, …, 1] broadcastable against ``ref``."""
    return a.reshape(a.shape + (1,) * (ref.ndim - a.ndim))


def batch_times(t: Tensor | float, z: Tensor) -> Tensor:
    """A scalar or [B] time as a float32 [B] tensor on z's device."""
    t = torch.as_tensor(t, dtype=torch.float32, device=z.device)
    return t.expand(z.shape[0]) if t.ndim == 0 else t


class Denoiser(nn.Module):
    """x̂ and ε̂ from a backbone ``F(z_t, t, cond)`` that predicts v (default), ε or x under ``schedule``.

    Only the backbone runs under bf16 autocast; its output is cast to fp32 before the
    parameterisation, so x̂ and ε̂ are always fp32 (math.md §2).

        denoiser = Denoiser(MyNet(), CosineSchedule(), prediction="eps")
        pred = denoiser(z_t, t)          # pred.x_hat, pred.eps_hat
    """

    def __init__(
        self,
        backbone: nn.Module,
        schedule: Schedule,
        prediction: PredictionType = "v",
        precision: Literal["fp32", "bf16"] = "fp32",
    ) -> None:
        super().__init__()
        if prediction not in PREDICTION_TYPES:
            raise ValueError(f"prediction must be 'v', 'eps' or 'x', got {prediction!r}")
        self.backbone = backbone
        self.schedule = schedule
        self.prediction = prediction
        self.precision = precision

    def raw(self, z_t: Tensor, t: Tensor, cond: Cond | None = None) -> Tensor:
        autocast = (
            torch.autocast(device_type=z_t.device.type, dtype=torch.bfloat16)
            if self.precision == "bf16"
            else nullcontext()
        )
        with autocast:
            out = self.backbone(z_t, t, cond)
        return out.float()

    def forward(self, z_t: Tensor, t: Tensor | float, cond: Cond | None = None) -> Prediction:
        t = batch_times(t, z_t)
        alpha, sigma = (expand_like(a, z_t) for a in self.schedule.alpha_sigma(t))
        out = self.raw(z_t, t, cond)
        if self.prediction == "v":
            # math.md §2: x̂ = α z − σ v̂, ε̂ = σ z + α v̂.
            return Prediction(alpha * z_t - sigma * out, sigma * z_t + alpha * out)
        if self.prediction == "eps":
            return Prediction((z_t - sigma * out) / alpha, out)
        return Prediction(out, (z_t - alpha * out) / sigma)

    def unwrapped(self) -> "Denoiser":
        """The same denoiser around the bare backbone when it is wrapped by DistributedDataParallel: a
        forward through it (the stop-grad reference of a consistency target) takes no part in DDP's
        gradient bookkeeping. Itself otherwise."""
        if isinstance(self.backbone, DistributedDataParallel):
            return Denoiser(self.backbone.module, self.schedule, self.prediction, self.precision)  # type: ignore[arg-type]
        return self


class Retimed:
    """A denoiser trained on another schedule, called on this one: the same log-SNR is the same noise
    level (z_t/α_t = x + e^{−λ/2} ε), so time t here is time λ_inner⁻¹(λ(t)) for ``inner`` (math.md §12).

    The caller checks that ``inner``'s log-SNR range covers ``schedule``'s (see ``logsnr_range``)."""

    def __init__(self, inner: DenoiserLike, schedule: Schedule) -> None:
        self.inner = inner
        self.schedule = schedule

    def __call__(self, z_t: Tensor, t: Tensor | float, cond: Cond | None = None) -> Prediction:
        t = batch_times(t, z_t)
        return self.inner(z_t, self.inner.schedule.t_from_logsnr(self.schedule.logsnr(t)), cond)


class Clipped:
    """``inner`` with x̂ clipped to the data range [lo, hi] and ε̂ derived from the clipped x̂ at the same z_t,
    ε̂ = (z_t − α_t x̂)/σ_t (docs/math.md §12). E[x | z_t] of data in the range lies in it, so the clip can only
    bring x̂ nearer; every sampler and CD step then sees a DDIM step with the clipped x̂ (diffusers'
    ``clip_sample`` with ``use_clipped_model_output``). A guided x̂ is clipped after guidance, as diffusers does."""

    def __init__(self, inner: DenoiserLike, lo: float = -1.0, hi: float = 1.0) -> None:
        self.inner, self.lo, self.hi, self.schedule = inner, lo, hi, inner.schedule

    def __call__(self, z_t: Tensor, t: Tensor | float, cond: Cond | None = None) -> Prediction:
        t = batch_times(t, z_t)
        pred = self.inner(z_t, t, cond)
        x_hat = pred.x_hat.clamp(self.lo, self.hi)
        alpha, sigma = (expand_like(a, z_t) for a in self.schedule.alpha_sigma(t))
        x_cond = None if pred.x_hat_cond is None else pred.x_hat_cond.clamp(self.lo, self.hi)
        return Prediction(x_hat, (z_t - alpha * x_hat) / sigma, x_hat_cond=x_cond)


class CountingDenoiser:
    """``inner`` that counts network evaluations: the examples of every call, so a batched call of 2B
    for B samples (guidance) counts two per sample. ``evaluations / samples`` is the NFE."""

    def __init__(self, inner: DenoiserLike) -> None:
        self.inner, self.schedule, self.evaluations = inner, inner.schedule, 0

    def __call__(self, z_t: Tensor, t: Tensor | float, cond: Cond | None = None) -> Prediction:
        self.evaluations += len(z_t)
        return self.inner(z_t, t, cond)


def v_target(x: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """v = α ε − σ x (math.md §2)."""
    return alpha * eps - sigma * x
