"""Tables from ``recipes.json`` and ``sampler_sweep.json``: every recipe next to the best training-free
sampler at its NFE, and the default recipe over training seeds against the targets (docs/math.md §11).

    python benchmarks/recipes_report.py [--results benchmarks/results]

Writes ``recipes.md``. Targets (issue 8): at 1, 2 and 4 NFE the student's excess over the teacher's best
many-step result is at most ⅓ of the best training-free sampler's (or the student beats the teacher); at
8 NFE the student is no worse than the best sampler (difference of means below twice the pooled seed
std); the 8-step student within 1.2× of the teacher's best many-step result.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

from fewstep.evaluation import MANY_MIN_NFE, best_training_free, teacher_best

DATA = ("moons", "digits", "checkerboard")
# What `fewstep distill --objective auto` trains on each teacher (CD near the noise floor, CT far from
# it; N fixed at 128), as recipes.py names it.
DEFAULT = {"moons": "cd-fixedN128", "digits": "ct-fixedN128", "checkerboard": "cd-fixedN128"}


def baselines(sweep: dict[str, Any], data: str) -> list[dict[str, Any]]:
    return [{**r, "training_free": True} for r in sweep[data]["rows"]]


def seeds_of(recipes: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [entry for entry in recipes.values() if entry["recipe"] == name]


def pooled(entries: list[dict[str, Any]]) -> dict[str, float]:
    """Mean over training seeds of each seed's mean over sampling seeds; the std over every
    (training seed, sampling seed) value, and the std of the training-seed means."""
    means = [e["rows"][0]["mean"] for e in entries]
    values = [v for e in entries for v in e["rows"][0]["values"]]
    return {"mean": statistics.fmean(means), "std_all": statistics.stdev(values) if len(values) > 1 else 0.0,
            "std_train": statistics.stdev(means) if len(means) > 1 else float("nan"), "train_seeds": len(entries),
            "floor": statistics.fmean(e["rows"][0]["floor"] for e in entries)}


def verdict(s: int, student: dict[str, float], best: dict[str, Any], ref: dict[str, Any]) -> tuple[str, float | None]:
    excess_best = best["mean"] - ref["mean"]
    if s <= 4:
        if student["mean"] <= ref["mean"]:
            return "met (better than the teacher)", None
        ratio = (student["mean"] - ref["mean"]) / excess_best if excess_best > 0 else math.inf
        return ("met" if ratio <= 1 / 3 else "missed"), ratio
    spread = math.sqrt((student["std_all"] ** 2 + best["std"] ** 2) / 2)
    ok = student["mean"] - best["mean"] < 2 * spread and student["mean"] <= 1.2 * ref["mean"]
    return ("met" if ok else "missed"), None


def report(recipes: dict[str, Any], sweep: dict[str, Any], defaults: dict[str, str] = DEFAULT) -> str:
    lines = ["# Student recipes against the training-free samplers", ""]
    for data in DATA:
        default = defaults[data]
        base = baselines(sweep, data)
        ref = teacher_best(base)
        lines += [f"## {data}: the default recipe ({default}) over training seeds", "",
                  f"Teacher's best many-step result (≥ {MANY_MIN_NFE} NFE): {ref['sampler']} at {ref['steps']} steps, "
                  f"{ref['mean']:.4g} ± {ref['std']:.2g}.", "",
                  "| NFE | student (mean over training seeds) | training-seed std | noise floor | student − floor | best training-free at ≤ NFE | excess ratio | target |",
                  "|---:|---:|---:|---:|---:|---|---:|---|"]
        for s in (1, 2, 4, 8):
            entries = seeds_of(recipes, f"{data}-{default}-S{s}")
            best = best_training_free(base, s)
            if not entries or best is None:
                continue
            st = pooled(entries)
            result, ratio = verdict(s, st, best, ref)
            lines.append(f"| {s} | {st['mean']:.4g} ± {st['std_all']:.2g} ({st['train_seeds']} seeds) | {st['std_train']:.2g} | "
                         f"{st['floor']:.4g} | {st['mean'] - st['floor']:.4g} | {best['sampler']} ({best['steps']} steps): "
                         f"{best['mean']:.4g} ± {best['std']:.2g} | {'–' if ratio is None else f'{ratio:.2f}'} | {result} |")
        lines += ["", f"## {data}: every recipe (training seed 0; mean ± std over 3 sampling seeds)", "",
                  "| recipe | iterations | student | best training-free at ≤ NFE | excess ratio |", "|---|---:|---:|---|---:|"]
        for key, entry in sorted(recipes.items()):
            if entry["data"] != data or entry["seed"] != 0:
                continue
            row = entry["rows"][0]
            best = best_training_free(base, row["nfe"])
            ratio = (row["mean"] - ref["mean"]) / (best["mean"] - ref["mean"]) if best and best["mean"] > ref["mean"] else None
            lines.append(f"| {entry['recipe']} | {entry['iters']} | {row['mean']:.4g} ± {row['std']:.2g} | "
                         f"{best['sampler']}: {best['mean']:.4g} | {'–' if ratio is None else f'{ratio:.2f}'} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    text = report(json.loads((args.results / "recipes.json").read_text()),
                  json.loads((args.results / "sampler_sweep.json").read_text()))
    (args.results / "recipes.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
