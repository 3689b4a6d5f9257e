"""Text-to-image in miniature (issue 11, docs/math.md §13): a guided caption-conditioned teacher on
``digits-text`` with the frozen all-MiniLM-L6-v2, its MCM students at a fixed w (S = 4, 8, 16, as the
paper's Table 6) and a w-conditioned student, against the teacher's many-step samples and its
training-free samplers at the same NFE.

    python benchmarks/text.py --runs /path/to/runs [--stages teacher students eval grid speed]

Figures: FD-classifier, class accuracy and prompt fidelity (digit, thickness, slant; with the real
held-out images' reference, the chance level and the shuffled-prompt floor) on N samples of the held-out
captions in turn × SEEDS sampling seeds (the same noise and prompts for every model). The grid stage puts
the same prompts and seeds through the teacher at 100 and 256 steps and the students side by side, and
measures how far each student's samples are from the 256-step teacher's from the same noise. Runs and
evaluations are cached under RUNS/text; results go to benchmarks/results/text.json and text.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewstep.data import load_dataset
from fewstep.evaluation import evaluate_run
from fewstep.io import save_json
from fewstep.runs import ensure_trained, load
from fewstep.runs.config import TrainConfig, preset_for, student_config
from guidance import step_seconds, wall_seconds  # benchmarks/guidance.py, beside this script

DATA = "digits-text"
N, SEEDS = 2000, (0, 1, 2, 3, 4)  # the protocol; --samples 500 --seeds 0 1 was the first, cheaper pass
W = 1.5                          # the paper's g = 0.5: the grid's w, and of every student by default
EXTRA_W: tuple[float, ...] = (4.0,)  # fixed-w students at these too (the paper's g = 3 is w = 4; --extra-w)
TARGETS = {(W, 16): (1.1, 0.03), (W, 8): (1.3, None)}  # (w, S) → FD ratio to the 256-step teacher, fidelity points
LONGER = (4.0, 16, 4)  # is a student's gap training-limited? (w, S, k): that student again at k × the iterations
W_RANGE = (1.0, 3.0)
STUDENT_STEPS = (4, 8, 16)
TEACHER_STEPS = (100, 256)
BASELINE_SAMPLERS = ("ddim", "unipc")
GRID_PROMPTS = ("a thick seven leaning right", "a thin seven leaning left", "handwritten 2, thick and upright",
                "the digit zero, thin stroke, slanted left", "a medium four standing upright", "an 8 with a thick stroke, leaning right",
                "a thin one leaning right", "Three: thick stroke, leaning left")


SMOKE: dict[str, Any] = {}   # --smoke: tiny settings that run every stage in a minute (checks the script, not the figures)


def teacher_config() -> TrainConfig:
    return dataclasses.replace(preset_for(DATA, "images"), cond="text", device="cpu", **SMOKE.get("teacher", {}))


class Bench:
    def __init__(self, root: Path, results: Path, cached_only: bool = False) -> None:
        self.root, self.results_dir, self.cached_only = root / "text", results, cached_only
        self.out = results / "text.json"
        self.root.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, Any] = json.loads(self.out.read_text()) if self.out.is_file() else {}
        self.dataset = load_dataset(DATA)

    def save(self) -> None:
        save_json(self.out, self.results)

    @property
    def teacher(self) -> Path:
        return self.root / "teacher"

    def train(self, name: str, config: TrainConfig) -> Path:
        workdir = self.root / name
        status, seconds = ensure_trained(config, workdir, dataset=self.dataset, overwrite=True)
        self.results.setdefault("train_seconds", {})[name] = wall_seconds(workdir)
        self.results.setdefault("iters", {})[name] = config.iters
        self.save()
        print(f"[text] {name}: {status} ({seconds:.0f} s)", flush=True)
        return workdir

    def rows(self, workdir: Path, sampler: str, steps: int, w: float | None) -> dict[str, Any] | None:
        """One evaluation row (held-out captions in turn), cached in the run folder by its arguments; None
        when it is not cached and only cached rows are wanted."""
        key = json.dumps([sampler, steps, w, N, list(SEEDS)])
        cache = workdir / f"text-eval-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        if self.cached_only:
            print(f"[text] {workdir.name} {sampler} {steps} w={w}: not evaluated (--cached-only)", flush=True)
            return None
        tick = time.perf_counter()
        row = evaluate_run(load(workdir, device="cpu"), self.dataset, [sampler], [steps], n=N, seeds=SEEDS, guidance=[w])[0]
        save_json(cache, row)
        print(f"[text] {workdir.name} {sampler} {steps} w={w}: NFE {row['nfe']}, FD {row['mean']:.2f}, digit "
              f"{row.get('fidelity_digit', float('nan')):.3f} ({time.perf_counter() - tick:.0f} s)", flush=True)
        return row

    def students_fields(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {f"cd-w{w}-S{s}": {"student_steps": s, "guidance": w}
                                          for w in (W, *EXTRA_W) for s in STUDENT_STEPS}
        out["cd-wrange-S8"] = {"student_steps": 8, "guidance_range": W_RANGE}
        w, s, k = LONGER
        if w in (W, *EXTRA_W):
            out[f"cd-w{w}-S{s}-x{k}"] = {"student_steps": s, "guidance": w, "iters": k * max(1, teacher_config().iters // 4)}
        return out

    # -- stages ---------------------------------------------------------------------------------------

    def teacher_stage(self) -> None:
        self.train("teacher", teacher_config())

    def students(self) -> None:
        base = teacher_config()
        for name, fields in self.students_fields().items():
            self.train(name, student_config(base, str(self.teacher), "cd", **{**fields, **SMOKE.get("student", {})}))

    def eval(self) -> None:
        """Students: their own S-step sampler; then the teacher at 256 DDIM steps guided at each student w (the
        targets' reference); the teacher's training-free samplers at each student's NFE, guided at each
        student w (NFE/2 steps) and unguided (NFE steps); then the teacher at 100 steps, then unguided. Each
        row is cached on its own and the results saved after each, so a stopped study resumes and reports
        what it has."""
        out = self.results.setdefault("eval", {})
        students = out["students"] = {}
        for name, fields in self.students_fields().items():
            run = load(self.root / name, device="cpu")
            row = self.rows(self.root / name, run.default_sampler, run.default_steps, W if "guidance_range" in fields else None)
            if row is not None:
                students[name] = {"fields": {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}, "row": row}
                self.save()
        teacher, baselines = out["teacher"], out["baselines"] = [], []

        def teacher_row(steps: int, w: float) -> None:
            row = self.rows(self.teacher, "ddim", steps, w)
            if row is not None:
                teacher.append(row)
                self.save()

        for w in (W, *EXTRA_W):
            teacher_row(TEACHER_STEPS[-1], w)
        for nfe in STUDENT_STEPS:
            for sampler in BASELINE_SAMPLERS:
                for steps, w in ((nfe, 1.0), *((nfe // 2, w) for w in (W, *EXTRA_W))):
                    row = self.rows(self.teacher, sampler, steps, w)
                    if row is not None:
                        baselines.append({**row, "budget": nfe})
                        self.save()
        for w in (W, *EXTRA_W):
            for steps in TEACHER_STEPS[:-1]:
                teacher_row(steps, w)
        for steps in reversed(TEACHER_STEPS):
            teacher_row(steps, 1.0)

    def grid(self) -> None:
        """The same prompts and noise through the teacher (100, 256 DDIM steps, guided at W) and the
        students; a PNG grid and each one's mean distance from the 256-step teacher's samples (the paper's
        "very close to the teacher from the same seeds"), over GRID_N samples of the held-out captions."""
        models: list[tuple[str, Path, dict[str, Any]]] = [
            *[(f"teacher DDIM {s} (NFE {2 * s})", self.teacher, {"sampler": "ddim", "steps": s, "guidance": W}) for s in TEACHER_STEPS],
            *[(f"student S={s} (NFE {s})", self.root / f"cd-w{W}-S{s}", {}) for s in STUDENT_STEPS],
            (f"w-conditioned S=8 at w={W}", self.root / "cd-wrange-S8", {"guidance": W}),
            *[(f"teacher UniPC {s // 2} (NFE {s})", self.teacher, {"sampler": "unipc", "steps": s // 2, "guidance": W}) for s in STUDENT_STEPS],
        ]
        grid_n = SMOKE.get("n", 500)
        prompts = [self.dataset.heldout_captions[i % len(self.dataset.heldout_captions)] for i in range(grid_n)]
        images, many_of = [], {}
        for label, workdir, kwargs in models:
            cache = workdir / f"text-grid-{hashlib.sha256(json.dumps([label, grid_n]).encode()).hexdigest()[:12]}.npz"
            if cache.is_file():
                both = np.load(cache)
                show, many = torch.from_numpy(both["show"]), torch.from_numpy(both["many"])
            else:
                run = load(workdir, device="cpu")
                show = run.sample_tensor(len(GRID_PROMPTS), seed=0, prompt=list(GRID_PROMPTS), **kwargs)
                many = run.sample_tensor(grid_n, seed=1, prompt=prompts, **kwargs)
                np.savez(cache, show=show.numpy(), many=many.numpy())
            images.append(show)
            many_of[label] = many
        reference = next(many for label, many in many_of.items() if label.startswith(f"teacher DDIM {TEACHER_STEPS[-1]} "))
        distance = {label: float((many - reference).flatten(1).pow(2).mean(1).sqrt().mean()) for label, many in many_of.items()}
        # The scale: the same teacher samples paired with their neighbours (another prompt, other noise).
        distance["(scale: the reference against itself shifted by one sample)"] = float(
            (reference.roll(1, 0) - reference).flatten(1).pow(2).mean(1).sqrt().mean())
        side_by_side(self.results_dir / "text_grid.png", [self.dataset.to_data_units(x) for x in images],
                     [label for label, _, _ in models], list(GRID_PROMPTS))
        self.results["grid"] = {"prompts": list(GRID_PROMPTS), "rows": [label for label, _, _ in models],
                                "rms_distance_to_teacher": distance, "reference": f"teacher DDIM {TEACHER_STEPS[-1]} steps, w = {W}", "n": grid_n}
        self.save()

    def speed(self) -> None:
        """Seconds per training step of the digits-text teacher (from its run) and of the mnist-text UNet
        preset (measured here, a few steps: it is trained only where a GPU is available)."""
        from fewstep.objectives import DiffusionObjective
        from fewstep.runs.build import build_denoiser, data_cond

        speed = self.results.setdefault("speed", {})
        if (self.teacher / "log.jsonl").is_file():
            speed["digits_text_teacher_s_per_step"] = wall_seconds(self.teacher) / teacher_config().iters
        mnist = load_dataset("mnist-text")
        config = dataclasses.replace(preset_for("mnist-text", "images"), cond="text")
        denoiser = build_denoiser(config, mnist.shape)
        objective = DiffusionObjective(cond_dropout=config.cond_dropout, nulls={"caption": 0})
        per_step = step_seconds(denoiser, objective, mnist.train, data_cond(config, mnist), config, steps=6)
        speed["mnist_text"] = {"seconds_per_step": per_step, "batch": config.batch, "iters": config.iters,
                               "hours_for_preset": per_step * config.iters / 3600, "threads": torch.get_num_threads()}
        self.save()
        print(f"[text] mnist-text UNet: {per_step:.2f} s per step at batch {config.batch}", flush=True)


    def report(self) -> None:
        """benchmarks/results/text.md from text.json."""
        ev = self.results["eval"]
        ev.setdefault("teacher", []), ev.setdefault("baselines", [])
        rows = ([("teacher DDIM", r) for r in ev["teacher"]] + [(f"teacher {r['sampler']}", r) for r in ev["baselines"]]
                + [(name, s["row"]) for name, s in ev["students"].items()])
        first = next((r for r in ev["teacher"] if r["w"] == 1.0 and r["steps"] == TEACHER_STEPS[-1]), rows[0][1])
        elements = [e for e in ("digit", "thickness", "slant") if f"fidelity_{e}" in first]
        lines = ["# Text-to-image in miniature: digits-text (benchmarks/text.py)", "",
                 f"{first['n_samples']} samples of the held-out captions in turn × seeds {first['seeds']} (the same noise and "
                 "prompts for every row); FD-classifier against the held-out images (floor: real training images); prompt "
                 "fidelity per element, mean ± std over seeds. NFE counts network calls (a guided step is 2).", "",
                 "Reference on real held-out images: " + ", ".join(f"{e} {first[f'fidelity_{e}_reference']:.3f}" for e in elements)
                 + "; chance: " + ", ".join(f"{e} {first[f'fidelity_{e}_chance']:.3f}" for e in elements)
                 + f"; shuffled-prompt floor ({first['sampler']}, {first['steps']} steps, w = {first['w']:g}): "
                 + ", ".join(f"{e} {first[f'fidelity_{e}_shuffled']:.3f}" for e in elements) + ".", "",
                 "| model | sampler | steps | NFE | w | FD-classifier | floor | " + " | ".join(f"{e} fidelity" for e in elements) + " |",
                 "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(elements)]
        for name, r in rows:
            w = "–" if r.get("w") is None else f"{r['w']:g}" + (" (guided)" if r.get("guided") else "")
            lines.append(f"| {name} | {r['sampler']} | {r['steps']} | {r['nfe']} | {w} | {r['mean']:.2f} ± {r['std']:.2f} | "
                         f"{r['floor']:.2f} | " + " | ".join(f"{r[f'fidelity_{e}']:.3f} ± {r[f'fidelity_{e}_std']:.3f}" for e in elements) + " |")
        lines += ["", "Students against the 256-step teacher at their own w (FD ratio paired per seed, mean ± 2 SE; fidelity "
                  "difference teacher − student with the binomial 2σ; *met* when the 2σ interval lies below the target, "
                  "*missed* when above, else not resolved at this sample size):", ""]
        for name, s in ev["students"].items():
            reference = next((r for r in ev["teacher"] if r["steps"] == TEACHER_STEPS[-1] and r["w"] == s["row"]["w"]
                              and r.get("guided")), None)
            lines.append(verdict(name, s["row"], reference, elements) if reference else f"- {name}: its teacher row is not evaluated yet")
        grid = self.results.get("grid")
        if grid:
            lines += ["", f"Side by side (text_grid.png): the same {len(grid['prompts'])} prompts and noise in every row. RMS "
                      f"distance (model units, {grid['n']} samples of the held-out captions, the same noise) from the "
                      f"{grid['reference']}:", ""]
            lines += [f"- {label}: {d:.3f}" for label, d in grid["rms_distance_to_teacher"].items()]
        speed = self.results.get("speed", {})
        if speed:
            lines += ["", "Speed (2 threads): the digits-text teacher "
                      f"{speed.get('digits_text_teacher_s_per_step', float('nan')):.3f} s per step (batch 64, quick evaluation "
                      "included); the mnist-text UNet preset "
                      f"{speed['mnist_text']['seconds_per_step']:.2f} s per step at batch {speed['mnist_text']['batch']} "
                      f"({speed['mnist_text']['hours_for_preset']:.0f} hours for its {speed['mnist_text']['iters']} iterations)."]
        seconds = {p.name: wall_seconds(p) for p in [self.teacher, *(self.root / n for n in self.students_fields())]
                   if (p / "log.jsonl").is_file()}
        lines += ["", "Training seconds here (wall clock; w = 1.5 students at 2 threads, S = 4 beside the test suite; w = 4 students at 1 thread beside the diffusers study; the 4×-iterations student at 1 thread beside two evaluations): "
                  + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items() if v) + "."]
        (self.results_dir / "text.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))


def verdict(name: str, student: dict[str, Any], teacher: dict[str, Any], elements: list[str]) -> str:
    """One line: the student's FD ratio and fidelity gap to the teacher, with the targets' verdicts."""
    ratios = np.array(student["values"]) / np.array(teacher["values"])
    k = len(ratios)
    ratio, two_se = float(ratios.mean()), float(2 * ratios.std(ddof=1) / np.sqrt(k)) if k > 1 else float("nan")
    n = student["n_samples"] * k
    gaps = {}
    for e in elements:
        p_t, p_s = teacher[f"fidelity_{e}"], student[f"fidelity_{e}"]
        gaps[e] = (p_t - p_s, 2 * float(np.sqrt(p_t * (1 - p_t) / n + p_s * (1 - p_s) / n)))
    target = TARGETS.get((student["w"], student["steps"]), (None, None)) if "wrange" not in name else (None, None)

    def judged(value: float, two_sigma: float, limit: float | None) -> str:
        if limit is None:
            return ""
        state = "met" if value + two_sigma < limit else "missed" if value - two_sigma > limit else "not resolved"
        return f" (target < {limit:g}: **{state}**)"

    return (f"- {name} (w = {student['w']:g}, S = {student['steps']}): FD ratio {ratio:.3f} ± {two_se:.3f}{judged(ratio, two_se, target[0])}; "
            + "; ".join(f"{e} gap {g:+.3f} ± {s2:.3f}{judged(g, s2, target[1])}" for e, (g, s2) in gaps.items()))


def side_by_side(path: Path, rows: list[np.ndarray], row_labels: list[str], prompts: list[str]) -> None:
    """A figure: one row of uint8 [C, H, W, 1] images per model, one column per prompt."""
    from fewstep.io import figure_png, pyplot, save_bytes

    plt = pyplot()
    fig, axes = plt.subplots(len(rows), len(prompts), figsize=(1.3 * len(prompts) + 2.2, 1.3 * len(rows) + 1.2), squeeze=False)
    for r, (images, label) in enumerate(zip(rows, row_labels)):
        for c, image in enumerate(images):
            ax = axes[r][c]
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
            if r == 0:
                ax.set_title("\n".join(prompts[c][i:i + 18] for i in range(0, len(prompts[c]), 18)), fontsize=6)
    fig.tight_layout()
    save_bytes(path, figure_png(fig))
    plt.close(fig)


STAGES = ("teacher", "students", "eval", "grid", "speed", "report")


def main() -> None:
    global EXTRA_W, N, SEEDS, TEACHER_STEPS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--smoke", action="store_true", help="tiny settings, to check the script end to end")
    parser.add_argument("--extra-w", type=float, nargs="*", default=list(EXTRA_W), help="fixed-w students at these w too")
    parser.add_argument("--samples", type=int, default=N, help="samples per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="sampling seeds")
    parser.add_argument("--cached-only", action="store_true",
                        help="eval: take only the rows already evaluated (a partial study's report), compute none")
    args = parser.parse_args()
    EXTRA_W, N, SEEDS = tuple(args.extra_w), args.samples, tuple(args.seeds)
    if args.smoke:
        N, SEEDS, TEACHER_STEPS = 16, (0,), (4, 8)
        SMOKE.update(teacher={"iters": 4, "batch": 8, "eval_samples": 8, "eval_steps": 4, "model": dataclasses.replace(
            preset_for(DATA, "images").model, width=8)}, student={"iters": 2, "batch": 8, "eval_samples": 8}, n=16)
    bench = Bench(args.runs, args.results, cached_only=args.cached_only)
    for stage in args.stages:
        getattr(bench, "teacher_stage" if stage == "teacher" else stage)()


if __name__ == "__main__":
    main()
