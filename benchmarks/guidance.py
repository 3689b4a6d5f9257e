"""Class-conditional digits and classifier-free guidance (docs/math.md §10, issue 9): the guided teacher over
a sweep of w, guided few-step students (fixed w = 1.5 and 4, the paper's g = 0.5 and 3, and one
w-conditioned student for w in [1, 4]) at S = 1, 2, 4, 8, every one against the best training-free sampler
of the same teacher at the same NFE, conditional CT / ECT, and an ablation of the condition dropout.

    python benchmarks/guidance.py --runs /path/to/runs [--stages teachers sweep students baselines ct]

All figures: FD-classifier and class accuracy on 2,000 samples × 5 sampling seeds (the same noise and the
same balanced labels for teacher and students). Runs and every evaluation are cached under RUNS/guidance;
results go to benchmarks/results/guidance.json (``benchmarks/guidance_report.py`` writes the tables).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from fewstep.data import load_dataset
from fewstep.evaluation import SAME_AS_DDIM_UP_TO, evaluate_run
from fewstep.io import save_json
from fewstep.runs import ensure_trained, load
from fewstep.runs.config import TrainConfig, preset_for, student_config

DATA = "digits"
N, SEEDS = 2000, (0, 1, 2, 3, 4)
SWEEP_W = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0)
TEACHER_STEPS = 256
STUDENT_W = (1.5, 4.0)                 # fixed-w students; the w-conditioned one is evaluated at these too
W_RANGE = (1.0, 4.0)
STUDENT_INTERVALS = ((0.25, 0.75), (0.0, 0.5))  # w = 1.5 students of a teacher guided only inside
STEPS = (1, 2, 4, 8)
SAMPLERS = ("ddim", "addim", "dpmpp2m", "unipc")
INTERVALS = ((0.0, 0.5), (0.25, 0.75), (0.5, 1.0))  # guidance only for t inside (Kynkäänniemi et al. 2024)
DROPOUT = (0.0, 0.05, 0.1, 0.2)
DEFAULT_DROPOUT = 0.1  # the teacher every student here learns from; fixed before the ablation, which then made 0.2 the default
ABLATION_N, ABLATION_SEEDS, ABLATION_STEPS, ABLATION_W = 2000, (0, 1, 2), 64, (1.0, 1.5, 2.0, 3.0)


def wall_seconds(workdir: Path) -> float | None:
    """Start to end of the run's last uninterrupted training, from its log (quick evaluation included)."""
    events = [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines() if '"event"' in line]
    starts = [e["time"] for e in events if e.get("event") == "start" and "time" in e]
    ends = [e["time"] for e in events if e.get("event") == "end" and "time" in e]
    return ends[-1] - starts[-1] if starts and ends else None


def step_seconds(denoiser: Any, objective: Any, x: torch.Tensor, cond: dict[str, torch.Tensor], config: TrainConfig,
                 steps: int = 8) -> float:
    """Median seconds of a training step (batch ``config.batch``) after 2 warm-up steps."""
    optimiser = torch.optim.AdamW(denoiser.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(0)
    seconds = []
    for step in range(steps):
        idx = torch.randint(len(x), (config.batch,), generator=generator)
        tick = time.perf_counter()
        loss = objective(denoiser, x[idx], {k: v[idx] for k, v in cond.items()}, step, generator).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        seconds.append(time.perf_counter() - tick)
    return sorted(seconds[2:])[len(seconds[2:]) // 2]


def teacher_config(dropout: float, seed: int) -> TrainConfig:
    return dataclasses.replace(preset_for(DATA, "images"), cond="class", cond_dropout=dropout, seed=seed, device="cpu")


class Bench:
    def __init__(self, root: Path, results: Path, only: list[str] | None = None) -> None:
        self.root, self.out, self.only = root, results / "guidance.json", only
        self.root.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, Any] = json.loads(self.out.read_text()) if self.out.is_file() else {}
        self.dataset = load_dataset(DATA)

    def save(self) -> None:
        save_json(self.out, self.results)

    def train(self, name: str, config: TrainConfig) -> Path:
        workdir = self.root / name
        status, seconds = ensure_trained(config, workdir, dataset=self.dataset, overwrite=True)
        self.results.setdefault("train_seconds", {})[name] = wall_seconds(workdir)
        self.save()
        print(f"[guidance] {name}: {status} ({seconds:.0f} s)", flush=True)
        return workdir

    def rows(self, workdir: Path, sampler: str, steps: int, w: float | None, interval=None, n: int = N, seeds=SEEDS) -> dict[str, Any]:
        """One evaluation row, cached in the run folder by its arguments."""
        key = json.dumps([sampler, steps, w, interval, n, list(seeds)])
        cache = workdir / f"guidance-eval-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        run = load(workdir, device="cpu")
        row = evaluate_run(run, self.dataset, [sampler], [steps], n=n, seeds=seeds, guidance=[w], interval=interval)[0]
        save_json(cache, row)
        return row

    # -- stages ---------------------------------------------------------------------------------------

    def teachers(self) -> None:
        """The condition-dropout ablation: teachers at p in DROPOUT, two training seeds each."""
        out = self.results.setdefault("ablation", {})
        for p in DROPOUT:
            for seed in (0, 1):
                name = f"teacher-p{p}-s{seed}"
                workdir = self.train(name, teacher_config(p, seed))
                weights = (1.0,) if p == 0.0 else ABLATION_W  # p = 0 never trains the null class: no guidance
                out[name] = {"p": p, "seed": seed, "rows": [self.rows(workdir, "ddim", ABLATION_STEPS, w, n=ABLATION_N, seeds=ABLATION_SEEDS)
                                                            for w in weights]}
                self.save()

    @property
    def teacher(self) -> Path:
        return self.root / f"teacher-p{DEFAULT_DROPOUT}-s0"

    def sweep(self) -> None:
        """The default teacher at 256 DDIM steps over the w sweep, and its 64-step DPM-Solver++/UniPC rows."""
        self.train(self.teacher.name, teacher_config(DEFAULT_DROPOUT, 0))
        self.results["teacher_sweep"] = [self.rows(self.teacher, "ddim", TEACHER_STEPS, w) for w in SWEEP_W]
        self.results["teacher_interval"] = [self.rows(self.teacher, "ddim", TEACHER_STEPS, STUDENT_W[0], interval)
                                            for interval in STUDENT_INTERVALS]
        self.save()

    def student_runs(self) -> dict[str, tuple[dict[str, Any], list[float]]]:
        """name → (student fields, the w it is evaluated at)."""
        out: dict[str, tuple[dict[str, Any], list[float]]] = {}
        for s in STEPS:
            for w in STUDENT_W:
                out[f"cd-w{w}-S{s}"] = ({"objective": "cd", "student_steps": s, "guidance": w}, [w])
            out[f"cd-wrange-S{s}"] = ({"objective": "cd", "student_steps": s, "guidance_range": W_RANGE}, list(STUDENT_W))
        for w in STUDENT_W:  # a second training seed at S = 4: the spread between recipes
            out[f"cd-w{w}-S4-seed1"] = ({"objective": "cd", "student_steps": 4, "guidance": w, "seed": 1}, [w])
        out["cd-wrange-S4-seed1"] = ({"objective": "cd", "student_steps": 4, "guidance_range": W_RANGE, "seed": 1}, list(STUDENT_W))
        for lo, hi in STUDENT_INTERVALS:  # the interval that made the best few-step guided samplers, distilled
            for s in (2, 4, 8):
                out[f"cd-w{STUDENT_W[0]}-i{lo}-{hi}-S{s}"] = (
                    {"objective": "cd", "student_steps": s, "guidance": STUDENT_W[0], "guidance_interval": (lo, hi)}, [STUDENT_W[0]])
        return out

    def students(self) -> None:
        base = teacher_config(DEFAULT_DROPOUT, 0)
        out = self.results.setdefault("students", {})
        for name, (fields, weights) in self.student_runs().items():
            if self.only and name not in self.only:
                continue
            workdir = self.train(name, student_config(base, str(self.teacher), **fields))
            run = load(workdir, device="cpu")
            out[name] = {"fields": {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()},
                         "rows": [self.rows(workdir, run.default_sampler, run.default_steps,
                                            w if "guidance_range" in fields else None) for w in weights]}
            self.save()

    def baselines(self) -> None:
        """The teacher's training-free samplers at each student NFE: unguided (w = 1, N steps), guided
        throughout at the students' w (2 calls per step: N/2 steps), guided inside an interval (the most
        steps whose counted calls fit), and separately guided with the same number of steps (2N NFE)."""
        teacher = load(self.teacher, device="cpu")
        rows = []
        for nfe in STEPS:
            for sampler in SAMPLERS:
                plans: list[tuple[int, float | None, Any, str]] = [(nfe, None, None, "unguided")]
                for w in STUDENT_W:
                    if nfe >= 2:
                        plans.append((nfe // 2, w, None, "guided"))
                    for interval in INTERVALS:
                        steps = max((s for s in range(1, nfe + 1) if teacher.nfe(sampler, s, guidance=w, interval=interval) <= nfe), default=None)
                        if steps is not None:
                            plans.append((steps, w, interval, "interval"))
                    plans.append((nfe, w, None, "same_steps"))
                for steps, w, interval, kind in plans:
                    if sampler != "ddim" and steps <= SAME_AS_DDIM_UP_TO.get(sampler, 0) and kind != "same_steps":
                        continue  # the solvers are DDIM exactly there (docs/math.md §11); addim is not
                    row = self.rows(self.teacher, sampler, steps, w, interval)
                    rows.append({**row, "budget": nfe, "kind": kind})
                    print(f"[guidance] baseline {sampler} {steps} steps w={w} {interval} ({kind}): NFE {row['nfe']}, "
                          f"FD {row['mean']:.2f}", flush=True)
        self.results["baselines"] = rows
        self.save()

    def ct(self) -> None:
        """What CT, multistep ECT and ECT do with conditional data: students trained with the teacher's
        condition dropout, sampled unguided (S calls) and guided at w = 1.5 (2S calls); CD at w = 1 beside."""
        base = teacher_config(DEFAULT_DROPOUT, 0)
        out = self.results.setdefault("ct", {})
        for name, fields in {"ct-S4": {"objective": "ct", "student_steps": 4}, "mect-S4": {"objective": "mect", "student_steps": 4},
                             "ect": {"objective": "ect"}, "cd-w1-S4": {"objective": "cd", "student_steps": 4}}.items():
            workdir = self.train(name, student_config(base, str(self.teacher), **fields))
            run = load(workdir, device="cpu")
            steps = [1, 2] if name == "ect" else [run.default_steps]
            out[name] = {"fields": fields, "rows": [self.rows(workdir, run.default_sampler, s, w) for s in steps for w in (None, 1.5)]}
            self.save()


    def mnist_speed(self) -> None:
        """Item 7's mnist: seconds per training step of the conditional mnist preset (UNet, batch 128) here.
        Run on an idle machine: a busy neighbour slows torch's threads several-fold."""
        from fewstep.objectives import DiffusionObjective
        from fewstep.runs.build import build_denoiser

        mnist = load_dataset("mnist")
        config = dataclasses.replace(preset_for("mnist", "images"), cond="class")
        denoiser = build_denoiser(config, mnist.shape, mnist.num_classes)
        objective = DiffusionObjective(cond_dropout=config.cond_dropout, nulls={"class": mnist.num_classes})
        per_step = step_seconds(denoiser, objective, mnist.train, {"class": mnist.train_labels}, config)
        self.results["mnist_speed"] = {"seconds_per_step": per_step, "batch": config.batch, "iters": config.iters,
                                       "hours_for_preset": per_step * config.iters / 3600, "threads": torch.get_num_threads(),
                                       "parameters": sum(p.numel() for p in denoiser.parameters())}
        self.save()
        print(f"[guidance] mnist UNet: {per_step:.2f} s per step at batch {config.batch}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--stages", nargs="*", default=["sweep", "students", "baselines", "ct", "teachers"])
    parser.add_argument("--only", nargs="*", help="students: only these names (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench = Bench(args.runs / "guidance", args.results, args.only)
    for stage in args.stages:
        tick = time.perf_counter()
        getattr(bench, stage)()
        print(f"[guidance] stage {stage}: {time.perf_counter() - tick:.0f} s", flush=True)


if __name__ == "__main__":
    main()
