"""Noise schedules (docs/math.md §1): the `Schedule` contract, its registry and the built-in classes.

Importing this package registers every schedule module listed below.
"""
from . import cosine, interpolated, tabulated  # noqa: F401  (each module registers its schedule)
from .base import (
    LOGSNR_MAX, LOGSNR_MIN, SCHEDULES, Schedule, alpha_sigma_from_logsnr, describe, logsnr_range, schedule_from_dict,
    snr, t_min, t_of_u, table_steps, time_grid, u_of_t, u_range,
)
from .cosine import CosineSchedule
from .grids import GRIDS, make_grid
from .interpolated import InterpolatedSchedule
from .tabulated import TabulatedSchedule

__all__ = [
    "Schedule", "SCHEDULES", "CosineSchedule", "InterpolatedSchedule", "TabulatedSchedule", "alpha_sigma_from_logsnr", "snr",
    "schedule_from_dict", "logsnr_range", "time_grid", "u_of_t", "u_range", "t_of_u", "LOGSNR_MIN", "LOGSNR_MAX",
    "GRIDS", "make_grid", "table_steps", "t_min", "describe",
]
