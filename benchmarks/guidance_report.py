"""Tables and target verdicts of benchmarks/guidance.py: benchmarks/results/guidance.json → guidance.md.

    python benchmarks/guidance_report.py [--results benchmarks/results]

A ratio between two rows is taken per sampling seed (teacher and students share the noise and the labels
of each seed), then mean ± 2 standard errors over the seeds. A target is *met* when that interval lies on
the right side of it, *missed* when it lies on the wrong side, otherwise *not resolved at this sample size*.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Sequence

STEPS = (1, 2, 4, 8)


def paired_ratio(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    """mean and 2 standard errors of a_i / b_i over the shared seeds."""
    ratios = [x / y for x, y in zip(a["values"], b["values"])]
    mean = sum(ratios) / len(ratios)
    sd = math.sqrt(sum((r - mean) ** 2 for r in ratios) / (len(ratios) - 1)) if len(ratios) > 1 else 0.0
    return mean, 2 * sd / math.sqrt(len(ratios))


def verdict(mean: float, half: float, target: float, below: bool) -> str:
    lo, hi = mean - half, mean + half
    if below:
        return "met" if hi < target else "missed" if lo > target else "not resolved"
    return "met" if lo > target else "missed" if hi < target else "not resolved"


def fd(row: dict[str, Any]) -> str:
    return f"{row['mean']:.1f} ± {row['std']:.1f}"


def acc(row: dict[str, Any]) -> str:
    return f"{100 * row['class_accuracy']:.1f}%" if "class_accuracy" in row else "–"


def describe(row: dict[str, Any]) -> str:
    at = "" if row.get("w") is None else f", w {row['w']:g}" + (" guided" if row.get("guided") else "")
    interval = f" in t∈[{row['interval'][0]:g}, {row['interval'][1]:g}]" if row.get("interval") else ""
    return f"{row['sampler']} {row['steps']} steps{at}{interval} (NFE {row['nfe']})"


def student_rows(results: dict[str, Any]) -> list[tuple[str, int, float, dict[str, Any]]]:
    """(kind, S, w, row) of the seed-0 students."""
    out = []
    for name, entry in results.get("students", {}).items():
        if "seed" in entry["fields"]:
            continue
        fields = entry["fields"]
        kind = "w-conditioned [1, 4]" if "guidance_range" in fields else f"fixed w = {fields['guidance']:g}"
        if fields.get("guidance_interval"):
            kind += " in t∈[{:g}, {:g}]".format(*fields["guidance_interval"])
        for row in entry["rows"]:
            out.append((kind, entry["fields"]["student_steps"], row["w"], row))
    return out


def best_free(baselines: Sequence[dict[str, Any]], nfe: int, w: float, unguided: bool = True) -> dict[str, Any] | None:
    """The best training-free row within ``nfe`` calls among: w = 1 (when ``unguided``), and the student's
    own w guided throughout or inside an interval."""
    within = [r for r in baselines if r["nfe"] <= nfe and math.isfinite(r["mean"])
              and ((unguided and r["kind"] == "unguided") or (r["kind"] in ("guided", "interval") and r["w"] == w))]
    return min(within, key=lambda r: r["mean"], default=None)


def report(results: dict[str, Any]) -> str:
    lines = ["# Class-conditional digits and classifier-free guidance (`benchmarks/guidance.py`)", ""]
    lines += ["FD-classifier (lower is better) and class accuracy (the share of samples the classifier assigns to the",
              "class asked for; real held-out digits: 97.5%), 2,000 samples × 5 seeds with the same noise and balanced",
              "labels for teacher and students. NFE counts network calls (a guided step is 2). Ratios are paired per seed,",
              "mean ± 2 SE; *met* / *missed* when that interval is on one side of the target.", ""]
    sweep = {r["w"]: r for r in results.get("teacher_sweep", [])}
    times = results.get("train_seconds", {})
    if sweep:
        first = next(iter(sweep.values()))
        lines += ["## The guided teacher, 256 DDIM steps", "",
                  f"Teacher: digits preset (MLP 512×4), class-conditional, condition dropout 0.1, 4,000 iterations "
                  f"({times.get('teacher-p0.1-s0') or float('nan'):.0f} s on this CPU, 2 threads). Noise floor {first['floor']:.1f}.", "",
                  "| w | NFE | FD-classifier | class accuracy |", "|---:|---:|---:|---:|"]
        lines += [f"| {w:g} | {r['nfe']} | {fd(r)} | {acc(r)} |" for w, r in sweep.items()]
        best = min(sweep.values(), key=lambda r: r["mean"])
        lines += ["", f"Lowest FD at w = {best['w']:g}: {fd(best)}, class accuracy {acc(best)}. At w = 1 (no guidance) "
                      f"class accuracy {acc(sweep[1.0])} against the real-image reference 97.5% (target: within 3 points)."]
        for r in results.get("teacher_interval", []):
            lines.append(f"Guided at w = {r['w']:g} only for t ∈ [{r['interval'][0]:g}, {r['interval'][1]:g}] (NFE {r['nfe']}): "
                         f"FD {fd(r)}, class accuracy {acc(r)}.")
        lines.append("")
    students = student_rows(results)
    baselines = results.get("baselines", [])
    if students and sweep:
        lines += ["## Students against the teacher at the same w (256 steps)", "",
                  "| student | S | w | FD | class accuracy | teacher FD at w | FD ratio (student / teacher) | target | verdict |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        within = {tuple(r["interval"]): r for r in results.get("teacher_interval", [])}
        for kind, s, w, row in sorted(students, key=lambda x: (x[0], x[2], x[1])):
            interval = row.get("distilled_interval")
            teacher = within.get(tuple(interval)) if interval else sweep.get(w)
            if teacher is None:
                continue
            mean, half = paired_ratio(row, teacher)
            target = {4: 1.5, 8: 1.2}.get(s)
            check = "–"
            if target is not None:
                check = verdict(mean, half, target, below=True)
                if s == 4:
                    gap = 100 * (teacher["class_accuracy"] - row["class_accuracy"])
                    check += f"; accuracy {gap:+.1f} pts below the teacher (≤ 2: {'met' if gap <= 2 else 'missed'})"
            lines.append(f"| {kind} | {s} | {w:g} | {fd(row)} | {acc(row)} | {fd(teacher)} | {mean:.2f} ± {half:.2f} | "
                         f"{'≤ ' + format(target, 'g') if target else '–'} | {check} |")
        lines.append("")
    if students and baselines:
        floor = next(iter(sweep.values()))["floor"] if sweep else float("nan")
        lines += ["## Students against the best training-free sampler at the same NFE", "",
                  "Best over DDIM, aDDIM, DPM-Solver++(2M) and UniPC of the same teacher within the student's NFE, "
                  "taken over: w = 1 (N calls for N steps), the student's w guided throughout (2N calls), and the "
                  "student's w guided only inside an interval (t ∈ [0, 0.5], [0.25, 0.75] or [0.5, 1]). Target at 2, 4 "
                  "and 8 NFE: the best sampler's FD ≥ 1.5× the student's. The last column is the most any generator could "
                  f"reach: the best sampler's FD over the noise floor ({floor:.1f}, 2,000 real training images).", "",
                  "| student | S = NFE | w | FD | best training-free | its FD | ratio (free / student) | verdict | best at the student's w only | ratio | free / floor |",
                  "|---|---:|---:|---:|---|---:|---:|---|---|---:|---:|"]
        for kind, s, w, row in sorted(students, key=lambda x: (x[0], x[2], x[1])):
            best = best_free(baselines, row["nfe"], w)
            own = best_free(baselines, row["nfe"], w, unguided=False)
            if best is None:
                continue
            mean, half = paired_ratio(best, row)
            check = verdict(mean, half, 1.5, below=False) if s >= 2 else "(1 NFE: reported)"
            own_cells = f"{describe(own)}: {fd(own)} | {paired_ratio(own, row)[0]:.2f}" if own else "– | –"
            lines.append(f"| {kind} | {s} | {w:g} | {fd(row)} | {describe(best)} | {fd(best)} | {mean:.2f} ± {half:.2f} | {check} | "
                         f"{own_cells} | {best['mean'] / floor:.2f} |")
        lines += ["", "Guided samplers with the same number of *steps* as the student (2× its NFE), for reference:", "",
                  "| steps | w | best guided sampler (2 calls per step) | FD | class accuracy |", "|---:|---:|---|---:|---:|"]
        for s in STEPS:
            for w in sorted({r["w"] for r in baselines if r["kind"] == "same_steps"}):
                rows = [r for r in baselines if r["kind"] == "same_steps" and r["budget"] == s and r["w"] == w]
                if rows:
                    best = min(rows, key=lambda r: r["mean"])
                    lines.append(f"| {s} | {w:g} | {describe(best)} | {fd(best)} | {acc(best)} |")
        lines.append("")
    spread = {n: e for n, e in results.get("students", {}).items() if n.endswith("S4") or n.endswith("S4-seed1")}
    if spread:
        lines += ["## Fixed-w against w-conditioned students (S = 4, two training seeds)", "",
                  "| student | w | FD seed 0 | FD seed 1 | class accuracy (seed 0, seed 1) |", "|---|---:|---:|---:|---|"]
        for name in sorted(n for n in spread if not n.endswith("seed1")):
            other = spread.get(f"{name}-seed1")
            if other is None:
                continue
            for a, b in zip(spread[name]["rows"], other["rows"]):
                lines.append(f"| {name} | {a['w']:g} | {fd(a)} | {fd(b)} | {acc(a)}, {acc(b)} |")
        lines.append("")
    ct = results.get("ct", {})
    if ct:
        lines += ["## CT, multistep ECT and ECT on conditional data", "",
                  "Trained class-conditional with the teacher's condition dropout (0.1), same budget as the CD students; "
                  "sampled unguided and guided at w = 1.5 (2 calls per step).", "",
                  "| student | steps | NFE | w | FD | class accuracy |", "|---|---:|---:|---:|---:|---:|"]
        for name, entry in ct.items():
            lines += [f"| {name} | {r['steps']} | {r['nfe']} | {r['w']:g}{' guided' if r.get('guided') else ''} | {fd(r)} | {acc(r)} |"
                      for r in entry["rows"]]
        lines.append("")
    mnist = results.get("mnist_speed")
    if mnist:
        lines += ["## mnist", "", f"The conditional mnist preset (UNet, {mnist['parameters'] / 1e6:.1f}M parameters) costs "
                  f"{mnist['seconds_per_step']:.1f} s per training step at batch {mnist['batch']} on this CPU ({mnist['threads']} "
                  f"threads): {mnist['hours_for_preset']:.0f} hours for its {mnist['iters']:,} iterations. Not trained here.", ""]
    ablation = results.get("ablation", {})
    if ablation:
        lines += ["## Condition dropout (teachers, 64 DDIM steps, 2,000 samples × 3 seeds)", "",
                  "| p | training seed | FD at w = 1 | class accuracy at w = 1 | best w | FD at best w | class accuracy there |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for name, entry in sorted(ablation.items(), key=lambda kv: (kv[1]["p"], kv[1]["seed"])):
            rows = {r["w"]: r for r in entry["rows"]}
            best = min(rows.values(), key=lambda r: r["mean"])
            lines.append(f"| {entry['p']:g} | {entry['seed']} | {fd(rows[1.0])} | {acc(rows[1.0])} | {best['w']:g} | {fd(best)} | {acc(best)} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    text = report(json.loads((args.results / "guidance.json").read_text()))
    (args.results / "guidance.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
