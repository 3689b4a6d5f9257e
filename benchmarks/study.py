"""The quality-vs-steps study: teachers, samplers, and multistep consistency students (docs/math.md §4–6).

    python benchmarks/study.py                  # everything, cached and resumable
    python benchmarks/study.py --only teachers samplers

Every run lives in ``--runs`` (default benchmarks/runs, not committed): a finished run is reused, an
interrupted one resumed, and each evaluation is cached beside its run. Results go to
``benchmarks/results/study.json`` and ``study.md``. Figures: SWD (moons) or FD-classifier (digits)
on the held-out split, mean ± std over 3 sampling seeds, with the noise floor of the same sample size.

The samplers stage evaluates the training-free samplers (``fewstep.evaluation.TRAINING_FREE``) at the NFE
budgets of ``STEPS`` (Heun at the most steps whose 2N − 1 calls fit), besides aDDIM's variants. Every
student row is stored next to the best training-free sampler at its NFE (``best_free``, ``teacher_best``,
``excess_ratio``: docs/math.md §11); the baselines are the teacher's rows here and, where
benchmarks/sampler_sweep.py has cached them, its rows in ``RUNS/teacher-DATA/sweep.jsonl`` (aDDIM's η
variants there are the strongest at 1–2 NFE).
"""
from __future__ import annotations

import argparse
import dataclasses
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from fewstep.data import load_dataset
from fewstep.evaluation import (
    TRAINING_FREE,
    against_training_free,
    best_training_free,
    evaluate_run,
    mark_training_free,
    training_free_plan,
)
from fewstep.io import save_json
from fewstep.runs import ensure_trained, load
from fewstep.runs.config import TrainConfig, preset_for, student_config

STEPS = [1, 2, 4, 8, 16, 64, 256]
# Besides TRAINING_FREE on its plan: aDDIM with the data-free v_t, and aDDIM's two last steps (below).
SAMPLERS = ["addim:data_free"]
XHAT = ["addim:table:xhat", "addim:data_free:xhat"]
# Every sampler the teacher is evaluated with here needs no training: all of them serve as baselines.
TEACHER_FREE = (*TRAINING_FREE, *SAMPLERS, *XHAT)
N_EVAL = {"moons": 2000, "digits": 500}
SEEDS = (0, 1, 2)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One run: a name, its data, and the config fields that differ from the default student."""

    name: str
    data: str
    fields: dict[str, Any]
    group: str
    samplers: tuple[str, ...] = ("consistency",)
    steps: tuple[int, ...] | None = None  # None: the student's own S


def teacher_config(data: str) -> TrainConfig:
    return dataclasses.replace(preset_for(data, load_dataset(data).kind), cond="none")  # the unconditional tables


# The study measures the paper's recipe: its N anneal, not fewstep's fixed N = 128 default (whose
# figures are in benchmarks/recipes.py); so study.json stays comparable across versions.
PAPER_N = {"n0": 64, "n1": 1280}


def student(data: str, teacher_dir: Path, **fields: Any) -> TrainConfig:
    """Every student of a data set gets the library's default student budget (a quarter of the teacher's)
    and, unless its spec says otherwise, the paper's N schedule."""
    return student_config(teacher_config(data), str(teacher_dir), fields.pop("objective"), **{**PAPER_N, **fields})


def student_specs() -> list[Spec]:
    specs = []
    for data in ("moons", "digits"):
        for s in (1, 2, 4, 8):
            specs.append(Spec(f"{data}-cd-S{s}", data, {"objective": "cd", "student_steps": s}, "main"))
            specs.append(Spec(f"{data}-ct-S{s}", data, {"objective": "ct", "student_steps": s}, "main"))
    m = "moons"
    specs.append(Spec(f"{m}-cd-S16", m, {"objective": "cd", "student_steps": 16}, "ablation: S = 16"))
    for s in (2, 8):
        specs.append(Spec(f"{m}-cd-ddimteacher-S{s}", m, {"objective": "cd", "student_steps": s, "teacher_sampler": "ddim"}, "ablation: DDIM teacher"))
    for s in (4,):
        specs.append(Spec(f"{m}-cd-fixedN128-S{s}", m, {"objective": "cd", "student_steps": s, "n0": 128, "n1": 128}, "ablation: fixed N = 128"))
    for weighting, c in (("snr1", 1e-3), ("vspace", 1e-1), ("vspace", 1e-5)):
        specs.append(Spec(f"{m}-cd-{weighting}-c{c:g}-S4", m, {"objective": "cd", "student_steps": 4, "weighting": weighting, "huber_c": c}, "ablation: weighting and c"))
    specs.append(Spec(f"{m}-ct-scratch-S4", m, {"objective": "ct", "student_steps": 4, "init": "none", "iters": 2 * teacher_config(m).iters // 4}, "ablation: CT from scratch (2x budget)"))
    # Easy Consistency Tuning (docs/math.md §7) on the same teachers and budget; multistep ECT on moons.
    for data in ("moons", "digits"):
        specs.append(Spec(f"{data}-ect", data, {"objective": "ect"}, "ECT", ("ect",), (1, 2)))
    for s in (2, 4, 8):
        specs.append(Spec(f"{m}-mect-S{s}", m, {"objective": "mect", "student_steps": s}, "multistep ECT"))
    return specs


def cached_eval(workdir: Path, samplers: list[str], steps: list[int], data: str) -> list[dict[str, Any]]:
    key = f"eval-{'_'.join(samplers).replace(':', '-')}-{'_'.join(map(str, steps))}-n{N_EVAL[data]}.json"
    path = workdir / key
    if path.is_file():
        return json.loads(path.read_text())
    rows = evaluate_run(load(workdir), load_dataset(data), samplers, steps, n=N_EVAL[data], seeds=SEEDS)
    save_json(path, rows)
    return rows


def teacher_rows(workdir: Path, data: str) -> list[dict[str, Any]]:
    """The teacher's samplers, each evaluation cached, marked ``training_free``: the training-free samplers
    at the NFE budgets of STEPS (``training_free_plan``), aDDIM (b: data-free) at STEPS, DDIM and aDDIM at 512
    steps, and aDDIM's last step to s = 0 against returning x̂ there (docs/math.md §4: report which is better)."""
    plan: dict[str, list[int]] = {}
    for spec, steps in training_free_plan(STEPS, TRAINING_FREE):
        plan.setdefault(spec, []).append(steps)
    rows = [r for spec, steps in plan.items() for r in cached_eval(workdir, [spec], steps, data)]
    rows += cached_eval(workdir, SAMPLERS, STEPS, data) + cached_eval(workdir, ["ddim", "addim"], [512], data)
    rows += cached_eval(workdir, XHAT, [1, 2, 4, 8], data)
    return mark_training_free(rows, TEACHER_FREE)


def sweep_rows(workdir: Path) -> list[dict[str, Any]]:
    """The teacher's rows cached by benchmarks/sampler_sweep.py (``sweep.jsonl``), marked ``training_free``."""
    path = workdir / "sweep.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return [{**r, "training_free": True} for r in rows]


def baselines(teacher: list[dict[str, Any]], sweep: list[dict[str, Any]], data: str) -> list[dict[str, Any]]:
    """The training-free rows a student of ``data`` is compared with: the teacher's here and the sweep's,
    only those of the study's sample size and seeds (the metrics' bias depends on the sample size)."""
    return [r for r in [*teacher, *sweep]
            if r.get("training_free") and r["n_samples"] == N_EVAL[data] and list(r["seeds"]) == list(SEEDS)]


def best_free_curve(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best training-free row within each NFE budget of STEPS (the plot's lower envelope)."""
    out = []
    for nfe in STEPS:
        best = best_training_free(rows, nfe)
        if best is not None:
            out.append({"budget": nfe, **{k: best[k] for k in ("sampler", "steps", "nfe", "mean", "std")}})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--only", nargs="*", default=["teachers", "samplers", "students"], help="stages to run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest beside other work on 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.results.mkdir(parents=True, exist_ok=True)
    out_path = args.results / "study.json"
    results: dict[str, Any] = json.loads(out_path.read_text()) if out_path.is_file() else {}
    results.setdefault("runs", {})

    def record(name: str, **entry: Any) -> None:
        results["runs"][name] = {**results["runs"].get(name, {}), **entry}
        save_json(out_path, results)

    for data in ("moons", "digits"):
        workdir = args.runs / f"teacher-{data}"
        config = teacher_config(data)
        _, seconds = ensure_trained(config, workdir, overwrite=True)  # a run of other settings is stale: retrain
        record(f"teacher-{data}", data=data, group="teacher", iters=config.iters, train_seconds_now=round(seconds, 1))
        if "samplers" in args.only:
            rows = teacher_rows(workdir, data)
            sweep = sweep_rows(workdir)
            base = baselines(rows, sweep, data)
            record(f"teacher-{data}", rows=rows, sweep_rows=len(sweep), best_free_curve=best_free_curve(base))
            print(f"[study] teacher-{data}: sampler table done ({len(rows)} rows; {len(sweep)} sweep rows as extra baselines)", flush=True)

    if "students" in args.only:
        base = {data: baselines(results["runs"].get(f"teacher-{data}", {}).get("rows", []),
                                sweep_rows(args.runs / f"teacher-{data}"), data) for data in ("moons", "digits")}
        for spec in student_specs():
            workdir = args.runs / spec.name
            config = student(spec.data, args.runs / f"teacher-{spec.data}", **spec.fields)
            _, seconds = ensure_trained(config, workdir, overwrite=True)  # a run of other settings is stale: retrain
            run = load(workdir)
            rows = cached_eval(workdir, list(spec.samplers), list(spec.steps or [config.student_steps]), spec.data)
            rows = against_training_free(rows, base[spec.data])
            record(spec.name, data=spec.data, group=spec.group, iters=config.iters, fields=spec.fields,
                   train_seconds_now=round(seconds, 1), rows=rows, step=run.step)
            for row in rows:
                best = row.get("best_free")
                vs = (f"; best training-free {best['sampler']} ({best['steps']} steps) {best['mean']:.4f}, "
                      f"excess ratio {row.get('excess_ratio', float('nan')):.2f}") if best else ""
                print(f"[study] {spec.name} ({row['sampler']}, {row['steps']} steps): {row['mean']:.4f} ± {row['std']:.4f} (floor {row['floor']:.4f}{vs})", flush=True)


if __name__ == "__main__":
    main()
