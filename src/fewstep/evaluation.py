"""Quality against steps: every figure with its noise floor and its spread over sampling seeds."""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import torch

from .runs import Run
from .runs.build import evaluation_conditions
from .data import Dataset
from .metrics import aggregate, evaluate_samples

SEEDS = (0, 1, 2)
TEACHER_STEPS = (1, 2, 4, 8, 16, 64)
FIDELITY_ELEMENTS = ("digit", "thickness", "slant", "width")  # prompt fidelity's columns, in this order
ROW_EXTRAS = ("class_tv", "nn_ratio_median", "nn_copy_fraction", "n_reference", "classifier_sha256", "classifier_accuracy",
              "class_accuracy_reference")
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
    guidance: Sequence[float | None] = (None,),
    interval: tuple[float, float] | None = None,
) -> list[dict[str, Any]]:
    """One row per (sampler, steps, guidance weight): metric mean ± std over ``seeds``, its floor, NFE
    (network calls per sample, counted: a guided step costs two) and speed.

    A class-conditional run samples every class in turn and adds the class accuracy (mean ± std, and the
    same classifier's accuracy on real held-out data as the reference); a caption-conditioned run samples
    the held-out captions in turn and adds the prompt fidelity (mean ± std; reference, chance, shuffled); ``guidance``: the weights w to
    sample at (None: the run unguided; ``interval``: guide only for t in it), each row's ``w`` the
    weight its samples stand for (1 for a conditional run unguided, a fixed-w student's own).
    ``extra`` (e.g. :class:`fewstep.metrics.inception.InceptionFID`) adds its figures to each row as
    ``name`` (mean), ``name_std``, ``name_values`` and ``name_floor``."""
    key = primary_metric(dataset)
    rows = []
    for spec in samplers:
        for s in steps:
            sampler = run.spec(spec, s)
            for w in guidance:
                rows.append(_evaluate_one(run, dataset, spec, sampler, w, interval, n, seeds, extra, key))
    return rows


def _evaluate_one(run: Run, dataset: Dataset, spec: str, sampler: Any, w: float | None, interval: tuple[float, float] | None,
                  n: int, seeds: Sequence[int], extra: ExtraMetric | None, key: str) -> dict[str, Any]:
    labels, prompts, cond = evaluation_conditions(run.config, dataset, torch.arange(n))
    values, floors, seconds, extras, added = [], [], 0.0, {}, []
    for seed in seeds:
        tick = time.perf_counter()
        samples = run.sample_tensor(n, sampler=sampler, seed=seed, cond=cond, guidance=w, interval=interval)
        seconds += time.perf_counter() - tick
        if not bool(samples.isfinite().all()):  # a diverged sampler scores inf, not a crash
            values.append(float("inf"))
            added.append({})
            continue
        metrics = evaluate_samples(dataset, samples, seed_floor=seed, labels=labels, prompts=prompts)
        values.append(metrics[key])
        floors.append(metrics[f"{key}_floor" if key == "swd" else "fd_floor"])
        extras = {k: v for k, v in metrics.items() if k not in (key, "swd_floor", "fd_floor")}
        per_seed = {k: v for k, v in metrics.items() if k == "class_accuracy" or (k.startswith("fidelity_") and k.count("_") == 1)}
        if extra is not None:
            per_seed.update(extra(dataset, samples, seed_floor=seed))
        added.append(per_seed)
    spread = aggregate(values)
    return {
        "sampler": spec, "steps": sampler.steps, "nfe": run.nfe(sampler, guidance=w, interval=interval), "metric": key,
        "mean": spread["mean"], "std": spread["std"], "values": values, "floor": sum(floors) / len(floors) if floors else float("nan"),
        "n_samples": n, "seeds": list(seeds), "samples_per_s": n * len(seeds) / max(seconds, 1e-9),
        **_represents(run, w, interval),
        **{k: v for k, v in extras.items() if k in ROW_EXTRAS or k.startswith("fidelity_")}, **_spread(added),
    }


def _represents(run: Run, w: float | None, interval: tuple[float, float] | None) -> dict[str, Any]:
    """The guidance a row's samples stand for: ``w`` (None for an unconditional run), ``guided`` (whether
    the sampler guided at sampling time, 2 calls per step), ``interval``."""
    if not run.nulls():
        return {"w": None, "guided": False}
    distilled = run.card.hyper.get("guidance")
    if distilled is not None:  # the student of a guided teacher: its w (and the teacher's interval), 1 call per step
        within = run.card.hyper.get("guidance_interval")
        return {"w": float(distilled), "guided": False, **({"distilled_interval": within} if within else {})}
    if run.guidance_range is not None:
        return {"w": float(run.guidance_range[0] if w is None else w), "guided": False}
    guided = w is not None and w not in (0.0, 1.0)
    return {"w": 1.0 if w is None else float(w), "guided": guided, **({"interval": list(interval)} if guided and interval else {})}


def training_free_plan(nfes: Sequence[int], samplers: Sequence[str] = TRAINING_FREE, calls_per_evaluation: int = 1) -> list[tuple[str, int]]:
    """(spec, steps) per sampler and NFE budget: the most steps whose network calls fit the budget
    (Heun's 2N − 1 calls reach only odd budgets exactly; a guided sampler makes 2 calls per evaluation)."""
    from .samplers import parse_sampler

    plan = []
    for spec in samplers:
        parsed = parse_sampler(spec)
        for nfe in nfes:
            steps = max((s for s in range(1, nfe + 1) if parsed.entry.nfe(s) * calls_per_evaluation <= nfe), default=None)
            if steps is not None and (spec, steps) not in plan and steps > SAME_AS_DDIM_UP_TO.get(parsed.name, 0):
                plan.append((spec, steps))
    return plan


def mark_training_free(rows: Sequence[dict[str, Any]], samplers: Sequence[str] = TRAINING_FREE) -> list[dict[str, Any]]:
    """``rows`` (a teacher's, from :func:`evaluate_run`) with those of a training-free sampler on its default
    grid marked ``training_free``, so that they serve as baselines without being evaluated again."""
    return [{**r, "training_free": True} if r["sampler"] in samplers else dict(r) for r in rows]


def baseline_weights(teacher: Run, rows: Sequence[dict[str, Any]]) -> list[float | None]:
    """The guidance weights a student's baselines run at: w = 1 and every w its ``rows`` stand for (a
    class-conditional teacher), else unguided."""
    if not teacher.nulls():
        return [None]
    return sorted({r["w"] for r in rows if r.get("w") is not None} | {1.0})


def missing_training_free(teacher: Run, dataset: Dataset, nfes: Sequence[int], have: Sequence[dict[str, Any]] = (), *,
                          n: int = 2000, seeds: Sequence[int] = SEEDS, samplers: Sequence[str] = TRAINING_FREE,
                          guidance: Sequence[float | None] = (None,)) -> list[dict[str, Any]]:
    """The teacher's training-free rows at each NFE budget and at :data:`MANY_NFE`, at each guidance weight
    (a guided step costs two calls), marked ``training_free``, except those ``have`` already holds
    (marked, with the same ``n`` and ``seeds``)."""
    done = {(r["sampler"], r["steps"], r.get("w"), r.get("guided", False)) for r in have
            if r.get("training_free") and r["n_samples"] == n and list(r["seeds"]) == list(seeds)}
    rows = []
    for w in guidance:
        represents = _represents(teacher, w, None)
        calls = 2 if represents["guided"] else 1
        for spec, steps in training_free_plan(sorted({*nfes, MANY_NFE}), samplers, calls):
            if (spec, steps, represents["w"], represents["guided"]) not in done:
                rows += [{**r, "training_free": True}
                         for r in evaluate_run(teacher, dataset, [spec], [steps], n=n, seeds=seeds, guidance=[w])]
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
    the figure of merit of docs/math.md §11 (≤ ⅓ is the target at 1–4 NFE; < 0: better than the teacher).
    The best sampler is taken over every guidance weight the baselines hold; the teacher's best at the
    row's own ``w`` (a student of the teacher guided at w = 4 is held to the teacher at w = 4)."""
    out = []
    for row in rows:
        reference = teacher_best([b for b in baselines if b.get("w") == row.get("w")])
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
    return {k: row[k] for k in ("sampler", "steps", "nfe", "mean", "std", "values", "w", "guided", "interval") if k in row}


def _spread(per_seed: list[dict[str, float]]) -> dict[str, Any]:
    """[{"fid": a, "fid_floor": b}, …] over seeds → {"fid": mean, "fid_std", "fid_values", "fid_floor": mean}.
    A diverged seed ({}) scores inf, as in the headline metric."""
    out: dict[str, Any] = {}
    names = list(dict.fromkeys(k for d in per_seed for k in d if not k.endswith("_floor")))
    for name in names:
        spread = aggregate([d.get(name, float("inf")) for d in per_seed])
        floors = [d[f"{name}_floor"] for d in per_seed if f"{name}_floor" in d]
        out.update({name: spread["mean"], f"{name}_std": spread["std"], f"{name}_values": spread["values"]})
        if floors:
            out[f"{name}_floor"] = sum(floors) / len(floors)
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
    guided = any(r.get("w") is not None for r in rows)
    accuracy = any("class_accuracy" in r for r in rows)
    elements = [e for e in FIDELITY_ELEMENTS if any(f"fidelity_{e}" in r for r in rows)]
    lines = [f"**{title}**" if title else ""]
    lines += ["| sampler | steps | NFE |" + (" w |" if guided else "")
              + f" {label} (mean ± std over {len(rows[0]['seeds'])} seeds) | noise floor |"
              + (" class accuracy (real: {:.3f}) |".format(next(r["class_accuracy_reference"] for r in rows if "class_accuracy" in r)) if accuracy else "")
              + "".join(f" {e} fidelity (real {_first(rows, e, 'reference')}, chance {_first(rows, e, 'chance')}, "
                        f"shuffled {_first(rows, e, 'shuffled')}) |" for e in elements)
              + (" FID (mean ± std) | FID floor |" if fid else "")
              + (" best training-free at ≤ NFE | excess ratio |" if free else ""),
              "|---|---:|---:|" + ("---:|" if guided else "") + "---:|---:|" + ("---:|" if accuracy else "") + "---:|" * len(elements)
              + ("---:|---:|" if fid else "") + ("---|---:|" if free else "")]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['nfe']} |" + (f" {_w_cell(r)} |" if guided else "")
                     + f" {r['mean']:.4f} ± {r['std']:.4f} | {r['floor']:.4f} |"
                     + (f" {r['class_accuracy']:.3f} ± {r['class_accuracy_std']:.3f} |" if "class_accuracy" in r else " – |" if accuracy else "")
                     + "".join(f" {r[f'fidelity_{e}']:.3f} ± {r[f'fidelity_{e}_std']:.3f} |" if f"fidelity_{e}" in r else " – |" for e in elements)
                     + (_fid_cells(r) if fid else "") + (_free_cells(r) if free else ""))
    return "\n".join(line for line in lines if line is not None)


def _first(rows: list[dict[str, Any]], element: str, kind: str) -> str:
    """The first row's fidelity ``kind`` (reference, chance, shuffled) of ``element``, for a column title."""
    value = next((r[f"fidelity_{element}_{kind}"] for r in rows if f"fidelity_{element}_{kind}" in r), None)
    return "–" if value is None else f"{value:.3f}"


def _w_cell(row: dict[str, Any]) -> str:
    """w, marked when the sampler guided (2 calls per step) and with its interval."""
    if row.get("w") is None:
        return "–"
    interval = row.get("interval")
    return f"{row['w']:g}" + (" (guided" + (f" in t∈[{interval[0]:g}, {interval[1]:g}]" if interval else "") + ")" if row.get("guided") else "")


def _free_cells(row: dict[str, Any]) -> str:
    best = row.get("best_free")
    if best is None:
        return " – | – |"
    ratio = row.get("excess_ratio")
    at = f", w {best['w']:g}" if best.get("w") is not None else ""
    return (f" {best['sampler']} ({best['steps']} steps{at}): {best['mean']:.4f} ± {best['std']:.4f} |"
            + (f" {ratio:.2f} |" if ratio is not None else " – |"))


def _fid_cells(row: dict[str, Any]) -> str:
    if "fid" not in row:
        return " – | – |"
    return f" {row['fid']:.4f} ± {row['fid_std']:.4f} | {row.get('fid_floor', float('nan')):.4f} |"
