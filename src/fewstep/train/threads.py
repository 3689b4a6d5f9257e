"""How many intra-op threads a run should use on a CPU that other processes may be using.

Measured on a 2-core machine (benchmarks/results/threads.json): torch's two OpenMP threads beside one
busy process run ~3× slower than alone, because every parallel region waits for the thread that shares
its core; one thread there loses only the second core. So when the user has not chosen (no
``OMP_NUM_THREADS``, no ``--threads``), a run takes the cores that are idle now, at least one.
"""
from __future__ import annotations

import os
import time

import torch


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(seconds: float = 0.3) -> float:
    """Cores kept busy by other processes over the next ``seconds`` (0.0 where /proc/stat is missing)."""
    try:
        busy0, total0 = _cpu_times()
        own0 = time.process_time()
        time.sleep(seconds)
        busy1, total1 = _cpu_times()
        own = time.process_time() - own0
    except (OSError, ValueError, IndexError):
        return 0.0
    cores = os.cpu_count() or 1
    if total1 <= total0:
        return 0.0
    busy_fraction = (busy1 - busy0) / (total1 - total0)
    return max(0.0, busy_fraction * cores - own / seconds)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def choose_threads(requested: int = 0) -> int:
    """``requested`` if given; the current setting if ``OMP_NUM_THREADS`` is set; else the idle cores."""
    if requested > 0:
        return requested
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return max(1, available_cores() - round(busy_cores()))


def apply_threads(requested: int = 0) -> int:
    threads = choose_threads(requested)
    torch.set_num_threads(threads)
    return threads
