"""Tables and the aDDIM default from ``benchmarks/results/sampler_sweep.json`` (docs/math.md §4, §11).

    python benchmarks/sweep_report.py [--results benchmarks/results]

Writes ``sampler_sweep.md``: per data set the training-free samplers against steps, the best aDDIM
choice per step count, and every aDDIM choice scored against DDIM with the paired seed spread (the
same sampling seeds, so the per-seed difference removes the reference set's noise).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

BASELINES = ("ddim", "ddim:logsnr", "dpmpp2m", "dpmpp2m:logsnr", "unipc", "unipc:logsnr", "heun", "heun:t")


def paired(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """(mean of a − b, std of the per-seed differences) over the shared sampling seeds."""
    diffs = [x - y for x, y in zip(a["values"], b["values"])]
    return statistics.fmean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0


def significance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """How much worse ``a`` is than ``b`` in units of twice the paired seed std (> 1: significantly worse)."""
    mean, std = paired(a, b)
    return mean / max(2 * std, 1e-12)


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["sampler"], r["steps"]): r for r in rows}


def addim_choices(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["sampler"] for r in rows if r["sampler"].startswith("addim")})


def relative_score(table: dict, spec: str, steps: int) -> float:
    """The row's mean over DDIM's at the same steps (1 = DDIM; log-averaged across data sets)."""
    return table[(spec, steps)]["mean"] / table[("ddim", steps)]["mean"]


def report(results: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    tables = {data: by_key(entry["rows"]) for data, entry in results.items()}
    steps_all = sorted({s for t in tables.values() for (_, s) in t})
    lines = ["# Training-free samplers on the study's teachers", ""]
    for data, table in tables.items():
        metric = next(iter(table.values()))["metric"]
        lines += [f"## {data} ({metric}, mean ± std over 3 sampling seeds)", "",
                  "| sampler | " + " | ".join(f"{s} steps" for s in steps_all) + " |",
                  "|---|" + "---:|" * len(steps_all)]
        for spec in BASELINES:
            cells = [f"{table[(spec, s)]['mean']:.4g} ± {table[(spec, s)]['std']:.2g} ({table[(spec, s)]['nfe']})"
                     if (spec, s) in table else "–" for s in steps_all]
            lines.append(f"| {spec} | " + " | ".join(cells) + " |")
        lines.append("")
    # aDDIM choices: geometric mean over data sets of (choice / DDIM) per step count.
    choices = sorted(set.intersection(*(set(addim_choices(list(t.values()))) for t in tables.values())))
    summary: dict[str, Any] = {}
    lines += ["## aDDIM choices against DDIM (geometric mean over data sets of choice/DDIM; < 1 is better)", "",
              "| aDDIM | " + " | ".join(f"{s}" for s in steps_all) + " | worst ≥ 64 steps (paired diff / 2·std) |",
              "|---|" + "---:|" * (len(steps_all) + 1)]
    for spec in choices:
        cells, summary[spec] = [], {}
        for s in steps_all:
            if all((spec, s) in t for t in tables.values()):
                g = math.exp(statistics.fmean(math.log(relative_score(t, spec, s)) for t in tables.values()))
                summary[spec][s] = g
                cells.append(f"{g:.3f}")
            else:
                cells.append("–")
        worst = max(((significance(t[(spec, s)], t[("ddim", s)]), data, s)
                     for data, t in tables.items() for s in steps_all if s >= 64 and (spec, s) in t), default=None)
        summary[spec]["worst_large"] = worst
        lines.append(f"| {spec} | " + " | ".join(cells) + (f" | {worst[0]:.2f} ({worst[1]}, {worst[2]}) |" if worst else " | – |"))
    return "\n".join(lines) + "\n", summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    text, _ = report(json.loads((args.results / "sampler_sweep.json").read_text()))
    (args.results / "sampler_sweep.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
