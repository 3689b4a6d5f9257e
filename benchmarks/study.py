"""The quality-vs-steps study: teachers, samplers, and multistep consistency students (docs/math.md §4–6).

    python benchmarks/study.py                  # everything, cached and resumable
    python benchmarks/study.py --only teachers samplers

Every run lives in ``--runs`` (default benchmarks/runs, not committed): a finished run is reused, an
interrupted one resumed, and each evaluation is cached beside its run. Results go to
``benchmarks/results/study.json`` and ``study.md``. Figures: SWD (moons) or FD-classifier (digits)
on the held-out split, mean ± std over 3 sampling seeds, with the noise floor of the same sample size.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from fewstep.runs import load
from fewstep.runs.config import TrainConfig, preset_for, student_config
from fewstep.data import load_dataset
from fewstep.evaluation import evaluate_run
from fewstep.io import save_json
from fewstep.runs import ensure_trained

STEPS = [1, 2, 4, 8, 16, 64, 256]
SAMPLERS = ["ddim", "addim", "addim:data_free", "heun"]
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
    return preset_for(data, load_dataset(data).kind)


def student(data: str, teacher_dir: Path, **fields: Any) -> TrainConfig:
    """Every student of a data set gets the library's default student budget (a quarter of the teacher's)."""
    return student_config(teacher_config(data), str(teacher_dir), fields.pop("objective"), **fields)


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
            rows = cached_eval(workdir, SAMPLERS, STEPS, data) + cached_eval(workdir, ["ddim", "addim"], [512], data)
            # aDDIM's last step to s = 0 against returning x̂ there (docs/math.md §4: report which is better).
            rows += cached_eval(workdir, ["addim:table:xhat", "addim:data_free:xhat"], [1, 2, 4, 8], data)
            record(f"teacher-{data}", rows=rows)
            print(f"[study] teacher-{data}: sampler table done", flush=True)

    if "students" in args.only:
        for spec in student_specs():
            workdir = args.runs / spec.name
            config = student(spec.data, args.runs / f"teacher-{spec.data}", **spec.fields)
            _, seconds = ensure_trained(config, workdir, overwrite=True)  # a run of other settings is stale: retrain
            run = load(workdir)
            rows = cached_eval(workdir, list(spec.samplers), list(spec.steps or [config.student_steps]), spec.data)
            record(spec.name, data=spec.data, group=spec.group, iters=config.iters, fields=spec.fields,
                   train_seconds_now=round(seconds, 1), rows=rows, step=run.step)
            for row in rows:
                print(f"[study] {spec.name} ({row['sampler']}, {row['steps']} steps): {row['mean']:.4f} ± {row['std']:.4f} (floor {row['floor']:.4f})", flush=True)


if __name__ == "__main__":
    main()
