"""Quality against steps: every figure with its noise floor and its spread over sampling seeds."""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

from .runs import Run
from .data import Dataset
from .metrics import aggregate, evaluate_samples

SEEDS = (0, 1, 2)
TEACHER_STEPS = (1, 2, 4, 8, 16, 64)
ROW_EXTRAS = ("class_tv", "nn_ratio_median", "nn_copy_fraction", "n_reference", "classifier_sha256", "classifier_accuracy")
ExtraMetric = Callable[..., dict[str, float]]  # (dataset, samples, *, seed_floor) → {"name": v, "name_floor": v}


METRIC_LABELS = {"swd": "SWD", "fd_classifier": "FD-classifier"}

# What a user gets from a teacher without training anything (docs/math.md §11), each on its default grid.
TRAINING_FREE = ("ddim", "addim", "dpmpp2m", "unipc", "heun")
MANY_NFE = 256      # the NFE the teacher's many-step rows are evaluated at
MANY_MIN_NFE = 64   # "many-step": the teacher's best result counts rows with at least this many calls
SAME_AS_DDIM_UP_TO = {"dpmpp2m": 2, "unipc": 2}  # steps at which a solver is DDIM exactly (math.md §11): not re-run


def primary_metric(dataset: Dataset) -> str:
    """The headline figure: SWD for points, FD-classifier for labelled images, pixel SWD otherwise."""
    if dataset.kind == "points" or dataset.train_labels is None:
        return "swd"
    return "fd_classifier"


def default_plan(run: Run, teacher_steps: Sequence[int] = TEACHER_STEPS,
                 teacher_samplers: Sequence[str] = ("ddim",)) -> tuple[list[str], list[int]]:
    """(samplers, steps) a run is evaluated with: a teacher's at ``teacher_steps``; a student's own sampler
    at its own steps (S for a multistep student, 1 and 2 for ECT)."""
    if run.sampler.name == "ect":
        return ["ect"], [1, 2]
    if run.is_student:
        return [run.sampler.name], [run.default_steps]
    return list(teacher_samplers), list(teacher_steps)


def evaluate_run(
    run: Run,
    dataset: Dataset,
    samplers: Sequence[str],
    steps: Sequence[int],
    *,
    n: int = 2000,
    seeds: Sequence[int] = SEEDS,
    extra: ExtraMetric | None = None,
) -> list[dict[str, Any]]:
    """One row per (sampler, steps): metric mean ± std over ``seeds``, its floor, NFE and speed.

    ``extra`` (e.g. :class:`fewstep.metrics.inception.InceptionFID`) adds its figures to each row as
    ``name`` (mean), ``name_std``, ``name_values`` and ``name_floor``."""
    key = primary_metric(dataset)
    rows = []
    for spec in samplers:
        for s in steps:
            sampler = run.spec(spec, s)
            values, floors, seconds, extras, added = [], [], 0.0, {}, []
            for seed in seeds:
                tick = time.perf_counter()
                samples = run.sample_tensor(n, sampler=sampler, seed=seed)
                seconds += time.perf_counter() - tick
                if not bool(samples.isfinite().all()):  # a diverged sampler scores inf, not a crash
                    values.append(float("inf"))
                    added.append({})
                    continue
                metrics = evaluate_samples(dataset, samples, seed_floor=seed)
                values.append(metrics[key])
                floors.append(metrics[f"{key}_floor" if key == "swd" else "fd_floor"])
                extras = {k: v for k, v in metrics.items() if k not in (key, "swd_floor", "fd_floor")}
                if extra is not None:
                    added.append(extra(dataset, samples, seed_floor=seed))
            spread = aggregate(values)
            rows.append({
                "sampler": spec, "steps": s, "nfe": sampler.nfe(), "metric": key,
                "mean": spread["mean"], "std": spread["std"], "values": values, "floor": sum(floors) / len(floors) if floors else float("nan"),
                "n_samples": n, "seeds": list(seeds), "samples_per_s": n * len(seeds) / max(seconds, 1e-9),
                **{k: v for k, v in extras.items() if k in ROW_EXTRAS}, **_spread(added),
            })
    return rows


def training_free_plan(nfes: Sequence[int], samplers: Sequence[str] = TRAINING_FREE) -> list[tuple[str, int]]:
    """(spec, steps) per sampler and NFE budget: the most steps whose network calls fit the budget
    (Heun's 2N − 1 calls reach only odd budgets exactly)."""
    from .samplers import parse_sampler

    plan = []
    for spec in samplers:
        parsed = parse_sampler(spec)
        for nfe in nfes:
            steps = max((s for s in range(1, nfe + 1) if parsed.entry.nfe(s) <= nfe), default=None)
            if steps is not None and (spec, steps) not in plan and steps > SAME_AS_DDIM_UP_TO.get(parsed.name, 0):
                plan.append((spec, steps))
    return plan


def mark_training_free(rows: Sequence[dict[str, Any]], samplers: Sequence[str] = TRAINING_FREE) -> list[dict[str, Any]]:
    """``rows`` (a teacher's, from :func:`evaluate_run`) with those of a training-free sampler on its default
    grid marked ``training_free``, so that they serve as baselines without being evaluated again."""
    return [{**r, "training_free": True} if r["sampler"] in samplers else dict(r) for r in rows]


def missing_training_free(teacher: Run, dataset: Dataset, nfes: Sequence[int], have: Sequence[dict[str, Any]] = (), *,
                          n: int = 2000, seeds: Sequence[int] = SEEDS,
                          samplers: Sequence[str] = TRAINING_FREE) -> list[dict[str, Any]]:
    """The teacher's training-free rows at each NFE budget and at :data:`MANY_NFE`, marked ``training_free``,
    except those ``have`` already holds (marked, with the same ``n`` and ``seeds``)."""
    done = {(r["sampler"], r["steps"]) for r in have
            if r.get("training_free") and r["n_samples"] == n and list(r["seeds"]) == list(seeds)}
    rows = []
    for spec, steps in training_free_plan(sorted({*nfes, MANY_NFE}), samplers):
        if (spec, steps) not in done:
            rows += [{**r, "training_free": True} for r in evaluate_run(teacher, dataset, [spec], [steps], n=n, seeds=seeds)]
    return rows


def best_training_free(rows: Sequence[dict[str, Any]], nfe: int) -> dict[str, Any] | None:
    """The best (lowest mean) training-free row within ``nfe`` network calls."""
    within = [r for r in rows if r.get("training_free") and r["nfe"] <= nfe and math.isfinite(r["mean"])]
    return min(within, key=lambda r: r["mean"], default=None)


def teacher_best(baselines: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The teacher's best many-step result: the best training-free row with ≥ :data:`MANY_MIN_NFE` calls."""
    return best_training_free([r for r in baselines if r["nfe"] >= MANY_MIN_NFE], 10**9)


def against_training_free(rows: Sequence[dict[str, Any]], baselines: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` (a student's) with, per row, the best training-free sampler at the same NFE and the
    teacher's best many-step result (≥ :data:`MANY_MIN_NFE` calls: a few-step sampler that happens to score
    below the converged ODE is not the teacher's best); ``excess_ratio`` = (row − teacher best)/(best sampler − teacher best),
    the figure of merit of docs/math.md §11 (≤ ⅓ is the target at 1–4 NFE; < 0: better than the teacher)."""
    reference = teacher_best(baselines)
    out = []
    for row in rows:
        best = best_training_free(baselines, row["nfe"])
        extra: dict[str, Any] = {}
        if best is not None:
            extra["best_free"] = _summary(best)
        if reference is not None:
            extra["teacher_best"] = _summary(reference)
        if best is not None and reference is not None and best["mean"] > reference["mean"]:
            extra["excess_ratio"] = (row["mean"] - reference["mean"]) / (best["mean"] - reference["mean"])
        out.append({**row, **extra})
    return out


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("sampler", "steps", "nfe", "mean", "std", "values")}


def _spread(per_seed: list[dict[str, float]]) -> dict[str, Any]:
    """[{"fid": a, "fid_floor": b}, …] over seeds → {"fid": mean, "fid_std", "fid_values", "fid_floor": mean}.
    A diverged seed ({}) scores inf, as in the headline metric."""
    out: dict[str, Any] = {}
    names = list(dict.fromkeys(k for d in per_seed for k in d if not k.endswith("_floor")))
    for name in names:
        spread = aggregate([d.get(name, float("inf")) for d in per_seed])
        floors = [d[f"{name}_floor"] for d in per_seed if f"{name}_floor" in d]
        out.update({name: spread["mean"], f"{name}_std": spread["std"], f"{name}_values": spread["values"],
                    f"{name}_floor": sum(floors) / len(floors) if floors else float("nan")})
    return out


def feature_network(dataset: Dataset, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the headline metric measures with, and the checksum of any learned network."""
    if primary_metric(dataset) == "swd":
        space = "points" if dataset.kind == "points" else "flattened pixels"
        return {"metric": "swd", "network": f"SWD on {space}, 256 projections, seed 0"}
    found = [r for r in rows if "classifier_sha256" in r]
    if found:
        sha, acc = found[0]["classifier_sha256"], found[0]["classifier_accuracy"]
    else:  # every sampler diverged: the cached classifier is the one the metric would have used
        from .metrics import get_classifier

        clf = get_classifier(dataset)
        sha, acc = clf.checksum, clf.accuracy
    return {"metric": "fd_classifier", "network": "fewstep FD-classifier: 16-d features of a small CNN trained on the training split",
            "classifier_sha256": sha, "classifier_accuracy": acc}


def protocol(run: Run, dataset: Dataset, rows: list[dict[str, Any]], *, fid: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evaluation protocol behind ``rows``: what a reader needs to reproduce or compare them."""
    from . import __version__

    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    return {
        "fewstep_version": __version__,
        "run": str(run.workdir), "run_step": run.step, "objective": run.config.objective, "device": str(run.device),
        "data": dataset.name, "heldout": len(dataset.heldout),
        "samples_per_seed": rows[0]["n_samples"] if rows else 0, "seeds": list(rows[0]["seeds"]) if rows else [],
        "samplers": samplers, "steps": {s: [r["steps"] for r in rows if r["sampler"] == s] for s in samplers},
        "feature_network": feature_network(dataset, rows),
        **({"fid": fid} if fid is not None else {}),
    }


def format_table(rows: list[dict[str, Any]], title: str = "") -> str:
    """A markdown table: sampler, steps, NFE, metric mean ± std (floor); rows compared with the
    training-free samplers (:func:`against_training_free`) also show the best of them at the same NFE."""
    if not rows:
        return ""
    label = METRIC_LABELS[rows[0]["metric"]]
    fid = any("fid" in r for r in rows)
    free = any("best_free" in r for r in rows)
    lines = [f"**{title}**" if title else ""]
    lines += [f"| sampler | steps | NFE | {label} (mean ± std over {len(rows[0]['seeds'])} seeds) | noise floor |"
              + (" FID (mean ± std) | FID floor |" if fid else "")
              + (" best training-free at ≤ NFE | excess ratio |" if free else ""),
              "|---|---:|---:|---:|---:|" + ("---:|---:|" if fid else "") + ("---|---:|" if free else "")]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['mean']:.4f} ± {r['std']:.4f} | {r['floor']:.4f} |"
                     + (_fid_cells(r) if fid else "") + (_free_cells(r) if free else ""))
    return "\n".join(line for line in lines if line is not None)


def _free_cells(row: dict[str, Any]) -> str:
    best = row.get("best_free")
    if best is None:
        return " – | – |"
    ratio = row.get("excess_ratio")
    return (f" {best['sampler']} ({best['steps']} steps): {best['mean']:.4f} ± {best['std']:.4f} |"
            + (f" {ratio:.2f} |" if ratio is not None else " – |"))


def _fid_cells(row: dict[str, Any]) -> str:
    if "fid" not in row:
        return " – | – |"
    return f" {row['fid']:.4f} ± {row['fid_std']:.4f} | {row['fid_floor']:.4f} |"
