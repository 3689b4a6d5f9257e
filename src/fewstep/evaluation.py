"""Quality against steps: every figure with its noise floor and its spread over sampling seeds."""
from __future__ import annotations

import time
from typing import Any, Sequence

from .api import Run
from .data import Dataset
from .metrics import aggregate, evaluate_samples
from .sampling import nfe

SEEDS = (0, 1, 2)


def primary_metric(dataset: Dataset) -> str:
    """The headline figure: SWD for points, FD-classifier for labelled images, pixel SWD otherwise."""
    if dataset.kind == "points" or dataset.train_labels is None:
        return "swd"
    return "fd_classifier"


def parse_sampler(spec: str) -> tuple[str, str, str]:
    """``addim:data_free`` → ("addim", "data_free", "addim"); ``addim:table:xhat`` ends with x̂ instead of
    aDDIM's last step (SPEC §4). A plain name uses the variance table where there is one."""
    name, variance, final = (spec.split(":") + ["", ""])[:3]
    return name, variance or "table", final or "addim"


def evaluate_run(
    run: Run,
    dataset: Dataset,
    samplers: Sequence[str],
    steps: Sequence[int],
    *,
    n: int = 2000,
    seeds: Sequence[int] = SEEDS,
) -> list[dict[str, Any]]:
    """One row per (sampler, steps): metric mean ± std over ``seeds``, its floor, NFE and speed."""
    key = primary_metric(dataset)
    rows = []
    for spec in samplers:
        name, variance, final = parse_sampler(spec)
        for s in steps:
            values, floors, seconds, extras = [], [], 0.0, {}
            for seed in seeds:
                tick = time.perf_counter()
                samples = run.sample_tensor(n, steps=s, sampler=name, seed=seed, variance=variance, final=final)
                seconds += time.perf_counter() - tick
                if not bool(samples.isfinite().all()):  # a diverged sampler scores inf, not a crash
                    values.append(float("inf"))
                    continue
                metrics = evaluate_samples(dataset, samples, seed_floor=seed)
                values.append(metrics[key])
                floors.append(metrics[f"{key}_floor" if key == "swd" else "fd_floor"])
                extras = {k: v for k, v in metrics.items() if k not in (key, "swd_floor", "fd_floor")}
            spread = aggregate(values)
            rows.append({
                "sampler": spec, "steps": s, "nfe": nfe(name, s), "metric": key,
                "mean": spread["mean"], "std": spread["std"], "values": values, "floor": sum(floors) / len(floors) if floors else float("nan"),
                "n_samples": n, "seeds": list(seeds), "samples_per_s": n * len(seeds) / max(seconds, 1e-9),
                **{k: v for k, v in extras.items() if k in ("class_tv", "nn_ratio_median", "nn_copy_fraction", "n_reference")},
            })
    return rows


def format_table(rows: list[dict[str, Any]], title: str = "") -> str:
    """A markdown table: sampler, steps, NFE, metric mean ± std (floor)."""
    if not rows:
        return ""
    label = {"swd": "SWD", "fd_classifier": "FD-classifier"}[rows[0]["metric"]]
    lines = [f"**{title}**" if title else ""]
    lines += [f"| sampler | steps | NFE | {label} (mean ± std over {len(rows[0]['seeds'])} seeds) | noise floor |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['mean']:.4f} ± {r['std']:.4f} | {r['floor']:.4f} |")
    return "\n".join(line for line in lines if line is not None)
