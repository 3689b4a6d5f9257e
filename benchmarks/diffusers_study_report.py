"""The markdown table of benchmarks/diffusers_study.py, from its JSON.

    python benchmarks/diffusers_study_report.py [--results benchmarks/results]

Per teacher: the training-free rows (diffusers' DDIM and UniPC with trailing and with the saved "leading"
spacing, fewstep's DDIM and UniPC as a cross-check, at NFE 2, 4, 8, and DDIM at 256 steps), then the
students at S = 2, 4, 8 (and item 2's S = 4 student of the unclipped ε teacher): FD-classifier sampled in
stock diffusers and with fewstep's own sampler, the largest difference between the two, training seconds,
and the ratios to the best training-free sampler at the same NFE (paired per sampling seed).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

NAMES = {"ddim": "diffusers DDIM (trailing)", "unipc": "diffusers UniPC (trailing)",
         "ddim-leading": "diffusers DDIM (saved config: leading)", "unipc-leading": "diffusers UniPC (saved config: leading)",
         "fewstep-ddim": "fewstep DDIM", "fewstep-unipc": "fewstep UniPC"}
TEACHER_NAMES = {"eps-linear": "ε-prediction, linear betas", "v-cosine": "v-prediction, squaredcos_cap_v2"}


def fd(stat: dict[str, Any] | None, digits: int = 1) -> str:
    if not stat:
        return "—"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}" if len(stat["values"]) > 1 else f"{stat['mean']:.{digits}f}"


def ratio(stat: dict[str, Any] | None) -> str:
    return fd(stat, 2)


def diff(value: float | None) -> str:
    return "—" if value is None else f"{value:.1e}"


def markdown(results: dict[str, Any]) -> str:
    settings = results["settings"]
    floor = results.get("floor")
    teacher_iters = " and ".join(sorted({f"{t['teacher']['iters']:,}" for t in results["teachers"].values()})) or "—"
    lines = [
        "# diffusers teachers in, few-step students out (issue 10)", "",
        (f"`benchmarks/diffusers_study.py`: FD-classifier on {settings['samples']:,} samples per sampling seed "
        f"(seeds {', '.join(map(str, settings['seeds']))}; mean ± std over seeds), against the held-out split; noise "
        f"floor (as many real training images): {fd(floor)}. The same initial noise for every method at a seed. "
        "Teachers trained by diffusers' own recipe (`DDPMScheduler.add_noise`) for "
        f"{teacher_iters} steps; "
        "students distilled with `fewstep distill`, exported with "
        "`fewstep export` and sampled in stock diffusers (`UNet2DModel` + `DDIMScheduler` from the exported folder)."), "",
    ]
    for name, teacher in results["teachers"].items():
        recipe = teacher["student_recipe"]
        lines += [f"## {name}: {TEACHER_NAMES.get(name, name)}", "",
                  "| teacher sampler | NFE | FD | values outside [−1, 1] | s per seed |", "|---|---:|---:|---:|---:|"]
        for row in sorted(teacher["free"], key=lambda r: (r["nfe"], list(NAMES).index(r["method"]))):
            nonfinite = f" ({row['nonfinite']:.0%} non-finite)" if row["nonfinite"] else ""
            lines.append(f"| {NAMES.get(row['method'], row['method'])} | {row['nfe']} | {fd(row['fd'])} | "
                         f"{row['outside']:.1%}{nonfinite} | {row['seconds_per_seed']:.1f} |")
        lines += ["", f"Students ({recipe['iters']:,} iterations at learning rate {recipe['lr']:g} unless said):", "",
                  ("| student | FD in diffusers | FD in fewstep | max abs diff (loop / pipeline) | train s | best training-free at NFE S "
                  "| FD ratio to it | excess ratio | ratio to DDIM-256 |"), "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in teacher["students"].values():
            label = f"S = {row['S']}"
            if row.get("teacher_clip") or "--no-teacher-clip" in row["flags"]:
                label += f" (teacher's x̂ {'clipped' if row.get('teacher_clip') else 'not clipped'})"
            if row["iters"] != recipe["iters"]:
                label += f", {row['iters']} it."
            best = row.get("best_free")
            best_cell = f"{fd(best['fd'])} ({NAMES.get(best['method'], best['method'])})" if best else "—"
            diffs = row.get("max_abs_diff") or {}
            timing = row.get("train_seconds") or {}
            seconds = "—" if timing.get("cli") is None else f"{timing['cli']:.0f}"
            if timing.get("per_iter") is not None:
                seconds += f" ({timing['per_iter']:.2f} s/it.)"
            lines.append(f"| {label} | {fd((row.get('diffusers') or {}).get('fd'))} | {fd((row.get('fewstep') or {}).get('fd'))} | "
                         f"{diff(diffs.get('loop_vs_fewstep'))} / {diff(diffs.get('pipeline_vs_fewstep'))} | "
                         f"{seconds} | {best_cell} | {ratio(row.get('ratio_to_best_free'))} | "
                         f"{ratio(row.get('excess_ratio'))} | {ratio(row.get('ratio_to_ddim256'))} |")
        item2 = teacher.get("item2")
        if item2:
            lines += ["", (f"Item 2 (S = 4): the student of the teacher with its x̂ clipped (the default for ε-prediction) "
                          f"scores {fd(item2['clipped'])}, of the unclipped teacher (`--no-teacher-clip`) {fd(item2['not_clipped'])}: "
                          f"ratio {ratio(item2['ratio_not_clipped_to_clipped'])} (unclipped / clipped, per seed). Both students "
                          "predict v (the CLI's choice for an ε teacher; an ε student is in benchmarks/results/eps_teacher.json).")]
        lines.append("")
    lines += [
        ("FD ratio: student / best training-free sampler at the student's NFE, per seed. Excess ratio (docs/math.md §11): "
        "(student − DDIM-256) / (best training-free − DDIM-256), per seed; < 0 beats the 256-step teacher. "
        "Train s: wall-clock seconds of the `fewstep distill` calls (process start, loading the teacher and the "
        "final quick evaluation included). Max abs diff: the largest difference in model units over every sample and seed between the stock diffusers loop (raw) and "
        "fewstep's own sampler on the same noise, and between `DDIMPipeline`'s images (2x − 1) and fewstep's clamped to "
        "[−1, 1]. The classifier clips its input to [−1, 1], so a clamp changes no FD."), "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    results = json.loads((args.results / "diffusers_study.json").read_text())
    (args.results / "diffusers_study.md").write_text(markdown(results))


if __name__ == "__main__":
    main()
