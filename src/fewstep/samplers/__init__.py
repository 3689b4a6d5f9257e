"""Samplers: pure functions ``sampler(denoiser, z, ts, *, cond=None, generator=None, **opts) -> x``.

``ts`` is a descending time grid from ``ts[0]`` (usually 1) to ``ts[-1] = 0``; ``z`` is z at ``ts[0]``.
Each module registers its sampler in :data:`SAMPLERS` (see :mod:`fewstep.samplers.spec`); importing
this package registers them all.
"""
# Importing a module registers its sampler.
from .addim import VarianceTable, addim, addim_step, data_free_variance, resolve_variance
from .ancestral import ancestral
from .consistency import consistency
from .ddim import ddim, ddim_step, inv_ddim
from .ect import ect
from .heun import heun
from .solvers import dpmpp2m, unipc
from .spec import SAMPLERS, SamplerSpec, TextOption, format_sampler, parse_sampler, register_sampler

__all__ = [
    "SAMPLERS", "SamplerSpec", "TextOption", "parse_sampler", "format_sampler", "register_sampler",
    "ddim", "ddim_step", "inv_ddim", "addim", "addim_step", "VarianceTable", "data_free_variance", "resolve_variance",
    "heun", "dpmpp2m", "unipc", "ancestral", "consistency", "ect",
]
