"""Adjusted DDIM (docs/math.md §4; [MCM] §3.2, Alg. 3).

Notation: ``v_t`` = v_t, the per-dimension variance of x | z_t that x̂ misses (tr Var[x|z_t]/d);
``c`` = α_s − α_t σ_s/σ_t; ``d`` = dimensions of one example.

    z_s = α_s x̂ + sqrt(σ_s² + d·c²·v_t/‖ε̂‖²) · ε̂,   ε̂ = (z_t − α_t x̂)/σ_t.

v_t = 0 gives DDIM. Choices of v_t for sampling: :func:`data_free_variance` (docs/math.md §4 b) and a
:class:`VarianceTable` measured on held-out data after teacher training (docs/math.md §4 c).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ..cond import Cond, cond_slice
from ..param import DenoiserLike, batch_times, expand_like
from ..schedules import Schedule, snr
from .ddim import coefficients, predict_x
from .spec import TextOption, register_sampler

# v_t as a function of the [B] times and the current x̂ and z_t; returns [B].
VarianceFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def addim_step(
    schedule: Schedule, x_hat: Tensor, z_t: Tensor, t: Tensor, s: Tensor, v_t: Tensor
) -> Tensor:
    """One aDDIM step; ``v_t`` is [B] (or scalar)."""
    alpha_t, sigma_t = coefficients(schedule, t, z_t)
    alpha_s, sigma_s = coefficients(schedule, s, z_t)
    eps_hat = (z_t - alpha_t * x_hat) / sigma_t
    c = alpha_s - alpha_t * sigma_s / sigma_t
    d = z_t[0].numel()
    eps_sq = eps_hat.flatten(1).pow(2).sum(1).clamp_min(1e-12)   # [B]
    v_t = torch.as_tensor(v_t, dtype=z_t.dtype, device=z_t.device).expand(z_t.shape[0])
    scale = (sigma_s.square() + expand_like(d * v_t / eps_sq, z_t) * c.square()).sqrt()
    return alpha_s * x_hat + scale * eps_hat


def data_free_variance(schedule: Schedule, fraction: float = 0.1) -> VarianceFn:
    """docs/math.md §4 (b): v_t = 0.1/(2 + SNR_t), 10% of the posterior variance under a N(0, 0.5) prior."""

    def v(t: Tensor, x_hat: Tensor, z_t: Tensor) -> Tensor:
        return fraction / (2.0 + snr(schedule, t))

    return v


def resolve_variance(choice: str | VarianceFn | None, schedule: Schedule, table: "VarianceTable | None",
                     eta: float | None = None) -> VarianceFn:
    """aDDIM's v_t from a spec's named choice: ``table`` (c) where there is one, else ``data_free`` (b);
    ``eta`` replaces the choice's own η (the table's measured 0.75, the data-free fraction 0.1)."""
    if choice is None or callable(choice):
        if eta is not None and choice is not None:
            raise ValueError("eta applies to a named variance choice, not to a v_t function")
        return choice or data_free_variance(schedule, *(() if eta is None else (eta,)))
    if choice not in ("table", "data_free"):
        raise ValueError(f"variance must be 'table' or 'data_free', got {choice!r}")
    if choice == "table" and table is not None:
        return table if eta is None else table.with_eta(eta)
    return data_free_variance(schedule, *(() if eta is None else (eta,)))


@dataclass
class VarianceTable:
    """docs/math.md §4 (c): v_t = η·E‖x − x̂(z_t)‖²/d tabulated on a grid of t, linearly interpolated."""

    ts: Tensor        # [K] increasing times in (0, 1]
    values: Tensor    # [K] per-dimension variance at each time, η·E‖x − x̂‖²/d
    eta: float = 0.75  # the η the values were measured with

    def with_eta(self, eta: float) -> "VarianceTable":
        """The same table at another η."""
        return VarianceTable(self.ts, self.values * (eta / self.eta), eta)

    def __call__(self, t: Tensor, x_hat: Tensor, z_t: Tensor) -> Tensor:
        ts, vals = self.ts.to(t.device), self.values.to(t.device)
        idx = torch.searchsorted(ts, t.clamp(ts[0], ts[-1])).clamp(1, len(ts) - 1)
        t0, t1 = ts[idx - 1], ts[idx]
        w = ((t - t0) / (t1 - t0)).clamp(0.0, 1.0)
        return vals[idx - 1] * (1 - w) + vals[idx] * w

    def to_dict(self) -> dict[str, list[float]]:
        return {"ts": self.ts.tolist(), "values": self.values.tolist(), "eta": self.eta}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> "VarianceTable":
        return cls(torch.tensor(d["ts"]), torch.tensor(d["values"]), float(d.get("eta", 0.75)))

    @classmethod
    @torch.no_grad()
    def measure(
        cls,
        denoiser: DenoiserLike,
        x: Tensor,
        *,
        eta: float = 0.75,
        points: int = 64,
        cond: Cond | None = None,
        generator: torch.Generator | None = None,
        batch: int = 1024,
    ) -> "VarianceTable":
        """Measure the table on held-out data ``x`` [N, ...] (once, after teacher training)."""
        ts = torch.linspace(1.0 / points, 1.0, points)
        values = []
        for t in ts:
            err, count = 0.0, 0
            for i in range(0, len(x), batch):
                xb = x[i : i + batch]
                cb = cond_slice(cond, i, i + batch)
                eps = torch.randn(xb.shape, generator=generator, device=xb.device)
                tb = batch_times(t, xb)
                alpha, sigma = coefficients(denoiser.schedule, tb, xb)
                x_hat = denoiser(alpha * xb + sigma * eps, tb, cb).x_hat
                err += (xb - x_hat).pow(2).sum().item()
                count += xb.numel()
            values.append(eta * err / count)
        return cls(ts, torch.tensor(values), eta)


# A run's aDDIM by step count when the spec leaves an option out (docs/math.md §4, measured in
# benchmarks/results/sampler_sweep.md on moons, digits and checkerboard): (most steps, options). The
# optimal η falls as steps grow; from 17 steps on every η > 0 we measured was worse than DDIM on digits by
# more than twice the paired seed std, so η = 0 there (aDDIM is then DDIM).
RUN_DEFAULTS: tuple[tuple[int, dict[str, Any]], ...] = (
    (1, {"variance": "table", "eta": 1.0, "final": "addim"}),
    (2, {"variance": "table", "eta": 0.25, "final": "addim"}),
    (8, {"variance": "table", "eta": 0.5, "final": "x_hat"}),
    (16, {"variance": "table", "eta": 0.25, "final": "x_hat"}),
    (2**31, {"variance": "table", "eta": 0.0, "final": "addim"}),
)
DATA_FREE_ETA = 0.1  # (b)'s own fraction, used where a default asks for the table and a run has none


def run_defaults(steps: int, has_table: bool) -> dict[str, Any]:
    """The options a run's ``addim`` takes at ``steps`` when its spec gives none; without a measured
    table, (b) at its own fraction (η = 0 stays 0)."""
    options = dict(next(o for most, o in RUN_DEFAULTS if steps <= most))
    if not has_table:
        options.update(variance="data_free", eta=DATA_FREE_ETA if options["eta"] > 0 else 0.0)
    return options


@register_sampler("addim", text_options=(
    TextOption("variance", {"table": "table", "data_free": "data_free"}),
    TextOption("final", {"addim": "addim", "xhat": "x_hat"}),
), number_options=("eta",))
@torch.no_grad()
def addim(
    denoiser: DenoiserLike,
    z: Tensor,
    ts: Tensor,
    *,
    cond: Cond | None = None,
    generator: torch.Generator | None = None,
    clip_x: bool = False,
    variance: VarianceFn | str | None = None,
    final: str = "addim",
    eta: float | None = None,
) -> Tensor:
    """aDDIM over ``ts``. The last step goes to s = 0 like every other (Alg. 3) unless ``final='x_hat'``.
    ``variance``: a v_t function (e.g. a :class:`VarianceTable`), or ``"data_free"`` (b, the default);
    ``"table"`` without a table object also falls back to (b); ``eta`` rescales a named choice."""
    if final not in ("addim", "x_hat"):
        raise ValueError(f"final must be 'addim' or 'x_hat', got {final!r}")
    variance = resolve_variance(variance, denoiser.schedule, None, eta)
    for t, s in zip(ts[:-1], ts[1:]):
        tb = batch_times(t, z)
        x_hat = predict_x(denoiser, z, tb, cond, clip_x)
        if s == 0 and final == "x_hat":
            return x_hat
        z = addim_step(denoiser.schedule, x_hat, z, tb, batch_times(s, z), variance(tb, x_hat, z))
    return z
