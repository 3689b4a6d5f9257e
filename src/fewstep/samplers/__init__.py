"""Samplers: pure functions ``sampler(denoiser, z, ts, *, cond=None, generator=None, **opts) -> x``.

``ts`` is a descending time grid from ``ts[0]`` (usually 1) to ``ts[-1] = 0``; ``z`` is z at ``ts[0]``.
"""
from .ddim import ddim, ddim_step, inv_ddim
from .addim import addim, addim_step, VarianceTable, data_free_variance
from .heun import heun
from .ancestral import ancestral
from .consistency import consistency
from .ect import ect

SAMPLERS = {"ddim": ddim, "addim": addim, "heun": heun, "ancestral": ancestral, "consistency": consistency, "ect": ect}
MAX_STEPS = {"ect": 2}  # samplers defined only up to a number of steps

__all__ = [
    "SAMPLERS", "ddim", "ddim_step", "inv_ddim", "addim", "addim_step", "VarianceTable",
    "data_free_variance", "heun", "ancestral", "consistency", "ect", "MAX_STEPS",
]
