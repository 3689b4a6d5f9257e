"""Markdown tables and the paper's relations, checked, from benchmarks/results/study.json.

    python benchmarks/study_report.py [--results benchmarks/results] [--runs benchmarks/runs]

The teacher's samplers are tabled per NFE budget (Heun at the most steps that fit) and drawn against NFE
beside the students. Every student is shown next to the best training-free sampler within its NFE and its
excess ratio (docs/math.md §11), which benchmarks/study.py stores with each student row; results from
before it lack them, and their tables keep their old columns.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

LABEL = {"moons": "SWD", "digits": "FD-classifier"}
SAMPLER_NAMES = {"ddim": "DDIM", "addim": "aDDIM (c: table)", "addim:data_free": "aDDIM (b: data-free)",
                 "dpmpp2m": "DPM-Solver++(2M)", "unipc": "UniPC", "heun": "Heun"}
SAME_AS_DDIM_UP_TO = {"dpmpp2m": 2, "unipc": 2}  # fewstep.evaluation: exactly DDIM at these steps, not run
FREE_NOTE = ("excess ratio = (student − teacher's best ≥ 64-NFE result) / (best training-free − teacher's best); "
             "≤ ⅓ is the target at 1–4 NFE, < 0 beats the teacher's best (docs/math.md §11)")


def fmt(row: dict[str, Any] | None) -> str:
    return "—" if row is None else f"{row['mean']:.4f} ± {row['std']:.4f}"


def teacher_row(results: dict, data: str, sampler: str, steps: int) -> dict | None:
    rows = results["runs"].get(f"teacher-{data}", {}).get("rows", [])
    return next((r for r in rows if r["sampler"] == sampler and r["steps"] == steps), None)


def free_cell(row: dict | None) -> str:
    """The best training-free sampler stored with a student row (``best_free``), or —."""
    best = (row or {}).get("best_free")
    if not best:
        return "—"
    return f"{best['mean']:.4f} ± {best['std']:.4f} ({best['sampler']}, {steps_of(best)})"


def steps_of(row: dict) -> str:
    return f"{row['steps']} step{'s' if row['steps'] != 1 else ''}"


def ratio_cell(row: dict | None) -> str:
    ratio = (row or {}).get("excess_ratio")
    return "—" if ratio is None else f"{ratio:.2f}"


def has_free(results: dict) -> bool:
    """Whether the student rows carry the training-free comparison (results before it do not: their
    tables keep their old columns)."""
    return any(r.get("best_free") for e in results["runs"].values() if e.get("group") != "teacher" for r in e.get("rows", []))


def student(results: dict, name: str) -> dict | None:
    rows = results["runs"].get(name, {}).get("rows")
    return rows[0] if rows else None


def train_seconds(runs: Path, name: str) -> float | None:
    """Wall-clock of a run from its log: first record to the end record (resumes included)."""
    log = runs / name / "log.jsonl"
    if not log.is_file():
        return None
    times = [json.loads(line)["time"] for line in log.read_text().splitlines() if line.strip()]
    return times[-1] - times[0] if len(times) > 1 else None


def teacher_table(results: dict, data: str) -> list[str]:
    """Per NFE budget, each sampler's row with the most calls within it (above the budget before: Heun's
    2N − 1 calls reach odd budgets only); the last column, the best of every training-free row (the
    sweep's included) within the budget."""
    entry = results["runs"].get(f"teacher-{data}", {})
    rows = [r for r in entry.get("rows", []) if r["sampler"] in SAMPLER_NAMES]
    budgets = sorted({r["nfe"] for r in rows if r["sampler"] == "ddim"})
    if not budgets:
        return []
    samplers = [s for s in SAMPLER_NAMES if any(r["sampler"] == s for r in rows)]
    best = {b["budget"]: b for b in entry.get("best_free_curve", [])}
    floor = rows[0]["floor"]
    head = " | ".join(SAMPLER_NAMES[s] for s in samplers) + (" | best training-free at ≤ NFE" if best else "")
    sweep = f"; the last column includes {entry['sweep_rows']} rows of benchmarks/sampler_sweep.py" if best and entry.get("sweep_rows") else ""
    lines = [f"#### {data}: teacher samplers, {LABEL[data]} (mean ± std over 3 seeds; noise floor {floor:.4f}{sweep})", "",
             f"| NFE | {head} |", "|---:|" + "---:|" * (len(samplers) + bool(best))]
    for prev, budget in zip([0, *budgets], budgets):
        cells = []
        for sampler in samplers:
            within = [r for r in rows if r["sampler"] == sampler and prev < r["nfe"] <= budget]
            row = max(within, key=lambda r: r["nfe"], default=None)
            if row is None and budget <= SAME_AS_DDIM_UP_TO.get(sampler, 0):
                cells.append("= DDIM")
            else:
                cells.append(fmt(row) + (f" ({steps_of(row)}, {row['nfe']} NFE)" if row and row["nfe"] != budget else ""))
        if best:
            b = best.get(budget)
            cells.append("—" if b is None else f"{b['mean']:.4f} ± {b['std']:.4f} ({b['sampler']}, {steps_of(b)})")
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    return lines + [""]


def student_table(results: dict, data: str) -> list[str]:
    free = has_free(results)
    ref = teacher_row(results, data, "ddim", 256)
    lines = [f"#### {data}: multistep consistency students, {LABEL[data]} (teacher DDIM at 256 steps: {fmt(ref)})", "",
             "| S | teacher DDIM, S steps | teacher aDDIM (c), S steps | MCM-CD (aDDIM teacher) | MCM-CT (from teacher) | CD / teacher-256 |"
             + (" best training-free at ≤ S NFE | excess ratio CD | excess ratio CT |" if free else ""),
             "|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if free else "")]
    for s in (1, 2, 4, 8, 16):
        cd, ct = student(results, f"{data}-cd-S{s}"), student(results, f"{data}-ct-S{s}")
        if cd is None and ct is None:
            continue
        ratio = f"{cd['mean'] / ref['mean']:.2f}×" if cd and ref else "—"
        lines.append(f"| {s} | {fmt(teacher_row(results, data, 'ddim', s))} | {fmt(teacher_row(results, data, 'addim', s))} | {fmt(cd)} | {fmt(ct)} | {ratio} |"
                     + (f" {free_cell(cd if (cd or {}).get('best_free') else ct)} | {ratio_cell(cd)} | {ratio_cell(ct)} |" if free else ""))
    return lines + (["", f"{FREE_NOTE}.", ""] if free else [""])


def ablation_table(results: dict, runs: Path) -> list[str]:
    free = has_free(results)
    lines = ["#### moons: ablations (SWD, each run's own iterations)", "",
             "| group | run | iterations | SWD | floor | train s |" + (" best training-free at ≤ NFE | excess ratio |" if free else ""),
             "|---|---|---:|---:|---:|---:|" + ("---:|---:|" if free else "")]
    for name, entry in results["runs"].items():
        if not entry.get("group", "").startswith("ablation") and not (name.startswith("moons-cd-S4") or name.startswith("moons-cd-S8") or name.startswith("moons-cd-S2")):
            continue
        row = student(results, name)
        secs = train_seconds(runs, name)
        lines.append(f"| {entry.get('group', 'main')} | {name} | {entry.get('iters', '—')} | {fmt(row)} | {row['floor']:.4f} | "
                     f"{'—' if secs is None else f'{secs:.0f}'} |" + (f" {free_cell(row)} | {ratio_cell(row)} |" if free else "")
                     if row else f"| {entry.get('group', 'main')} | {name} | — | — | — | — |" + (" — | — |" if free else ""))
    return lines + [""]


def rows_of(results: dict, name: str) -> list[dict]:
    return results["runs"].get(name, {}).get("rows", [])


def ect_table(results: dict) -> list[str]:
    """ECT at 1 and 2 steps against MCM-CD/CT at S = 1, 2; multistep ECT against MCM at S = 2, 4, 8."""
    free = has_free(results)
    lines = ["#### ECT against multistep consistency, same teacher and budget", "",
             "| data | steps | ECT | multistep ECT | MCM-CD | MCM-CT |" + (" best training-free at ≤ NFE |" if free else ""),
             "|---|---:|---:|---:|---:|---:|" + ("---:|" if free else "")]
    for data in ("moons", "digits"):
        ect = {r["steps"]: r for r in rows_of(results, f"{data}-ect")}
        for s in (1, 2, 4, 8):
            rows = [ect.get(s), student(results, f"{data}-mect-S{s}"), student(results, f"{data}-cd-S{s}"),
                    student(results, f"{data}-ct-S{s}")]
            cells = [fmt(r) for r in rows]
            if any(c != "—" for c in cells[:2]):
                # all four take s network calls: the best sampler is the same for each
                lines.append(f"| {data} | {s} | " + " | ".join(cells) + " |"
                             + (f" {free_cell(next((r for r in rows if r and r.get('best_free')), None))} |" if free else ""))
    return lines + [""]


def free_table(results: dict) -> list[str]:
    """Every student row (all groups) against the best training-free sampler within its NFE."""
    lines: list[str] = []
    for data in ("moons", "digits"):
        rows = [(name, r) for name, e in results["runs"].items() if e.get("data") == data and e.get("group") != "teacher"
                for r in e.get("rows", []) if r.get("best_free")]
        if not rows:
            continue
        ref = next((r["teacher_best"] for _, r in rows if r.get("teacher_best")), None)
        head = (f"; teacher's best ≥ 64-NFE result: {ref['mean']:.4f} ± {ref['std']:.4f} ({ref['sampler']}, {steps_of(ref)})"
                if ref else "")
        lines += [f"#### {data}: every student against the best training-free sampler at its NFE, {LABEL[data]}{head}", "",
                  "| run | group | sampler | NFE | student | best training-free at ≤ NFE | excess ratio |", "|---|---|---|---:|---:|---:|---:|"]
        for name, r in sorted(rows, key=lambda x: (x[1]["nfe"], x[1]["mean"])):
            lines.append(f"| {name} | {results['runs'][name].get('group', '—')} | {r['sampler']} | {r['nfe']} | {fmt(r)} | {free_cell(r)} | {ratio_cell(r)} |")
        lines += ["", f"{FREE_NOTE}.", ""]
    return lines


def final_step_table(results: dict) -> list[str]:
    """aDDIM's last step to s = 0 (the paper's Alg. 3) against returning x̂ there."""
    lines = ["#### aDDIM's last step: to s = 0 (Alg. 3) vs x̂", "", "| data | steps | v_t | last step aDDIM | last step x̂ |", "|---|---:|---|---:|---:|"]
    for data in ("moons", "digits"):
        for s in (1, 2, 4, 8):
            for variance, spec in (("c: table", "addim"), ("b: data-free", "addim:data_free")):
                a, x = teacher_row(results, data, spec, s), teacher_row(results, data, f"{spec.split(':')[0]}:{'table' if spec == 'addim' else 'data_free'}:xhat", s)
                if a and x:
                    lines.append(f"| {data} | {s} | {variance} | {fmt(a)} | {fmt(x)} |")
    return lines + [""]


def relations(results: dict) -> list[str]:
    """The paper's relations on our data, each stated with the numbers that decide it."""
    out = ["#### Relations (target → holds?)", ""]

    def m(name: str) -> float | None:
        row = student(results, name)
        return row["mean"] if row else None

    for data in ("moons", "digits"):
        ref = teacher_row(results, data, "ddim", 256)
        cds = [m(f"{data}-cd-S{s}") for s in (1, 2, 4, 8)]
        if ref and all(v is not None for v in cds):
            mono = all(a >= b for a, b in zip(cds, cds[1:]))
            out.append(f"- {data}: quality improves with S (CD): {' → '.join(f'{v:.4f}' for v in cds)} — **{'holds' if mono else 'does not hold'}**")
            for s, target in ((8, 1.2), (4, 1.5)):
                v = cds[(1, 2, 4, 8).index(s)]
                out.append(f"- {data}: {s}-step CD within {target}× of the 256-step teacher: {v:.4f} / {ref['mean']:.4f} = {v / ref['mean']:.2f}× — **{'holds' if v <= target * ref['mean'] else 'does not hold'}**")
            ddim4 = teacher_row(results, data, "ddim", 4)
            v4 = cds[2]
            out.append(f"- {data}: 4-step CD ≥ 3× better than the teacher's 4-step DDIM: {ddim4['mean']:.4f} / {v4:.4f} = {ddim4['mean'] / v4:.2f}× — **{'holds' if ddim4['mean'] >= 3 * v4 else 'does not hold'}**")
            cts = [m(f"{data}-ct-S{s}") for s in (1, 2)]
            if all(v is not None for v in cts):
                ok = all(c <= t for c, t in zip(cds[:2], cts))
                out.append(f"- {data}: CD ≥ CT at small S (S = 1, 2): CD {cds[0]:.4f}, {cds[1]:.4f} vs CT {cts[0]:.4f}, {cts[1]:.4f} — **{'holds' if ok else 'does not hold'}**")
    for s in (2, 8):
        a, d = m(f"moons-cd-S{s}"), m(f"moons-cd-ddimteacher-S{s}")
        if a is not None and d is not None:
            want = "aDDIM ≥ DDIM teacher" if s >= 4 else "paper: DDIM teacher better"
            out.append(f"- moons S = {s}: aDDIM teacher {a:.4f} vs DDIM teacher {d:.4f} ({want}) — aDDIM teacher is **{'better' if a < d else 'worse'}**")
    a, f = m("moons-cd-S4"), m("moons-cd-fixedN128-S4")
    if a is not None and f is not None:
        out.append(f"- moons S = 4: annealed N {a:.4f} vs fixed N = 128 {f:.4f} — annealed ≥ fixed **{'holds' if a <= f else 'does not hold'}**")
    return out + [""]


def plot(results: dict, path: Path) -> None:
    """Quality against network calls (log x): the teacher's training-free samplers as lines, the best of
    every training-free row within each budget as a grey band (where study.json has it), students as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for ax, data in zip(axes, ("moons", "digits")):
        entry = results["runs"].get(f"teacher-{data}", {})
        teacher = entry.get("rows", [])
        curve = entry.get("best_free_curve", [])
        if curve:  # the best of all training-free rows (the sweep's included) within each budget
            ax.plot([b["budget"] for b in curve], [b["mean"] for b in curve], "-", color="0.55", lw=5, alpha=0.35,
                    drawstyle="steps-post", label="best training-free at ≤ NFE")
        for i, (sampler, style) in enumerate((("ddim", "-o"), ("addim", "-s"), ("addim:data_free", "--s"),
                                              ("dpmpp2m", "-v"), ("unipc", "-d"), ("heun", ":^"))):
            rows = sorted((r for r in teacher if r["sampler"] == sampler), key=lambda r: r["nfe"])
            if rows:
                ax.plot([r["nfe"] for r in rows], [r["mean"] for r in rows], style, color=f"C{i}", ms=3, lw=1,
                        label=f"teacher {SAMPLER_NAMES[sampler]}")
        for kind, marker, color in (("cd", "*", "C6"), ("ct", "D", "C9"), ("mect", "P", "C8")):
            pts = [student(results, f"{data}-{kind}-S{s}") for s in (1, 2, 4, 8, 16)]
            pts = [(r["nfe"], r["mean"]) for r in pts if r]
            if pts:
                ax.plot(*zip(*pts), marker, color=color, mec="k", mew=0.5, ms=11 if marker == "*" else 7,
                        label=f"MCM-{kind.upper()}" if kind != "mect" else "multistep ECT")
        ect = rows_of(results, f"{data}-ect")
        if ect:
            ax.plot([r["nfe"] for r in ect], [r["mean"] for r in ect], "X", color="k", ms=8, label="ECT")
        if teacher:
            ax.axhline(teacher[0]["floor"], color="gray", ls="--", lw=1, label="noise floor")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylim(top=max(2.0 if data == "moons" else 3000, ax.get_ylim()[0]))
        ax.set_xlabel("network calls (NFE)")
        ax.set_ylabel(LABEL[data])
        ax.set_title(data)
    handles = {}
    for ax in axes:  # one legend for both panels, below them
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 7), fontsize=7.5, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    args = parser.parse_args()
    results = json.loads((args.results / "study.json").read_text())
    lines: list[str] = []
    for data in ("moons", "digits"):
        lines += teacher_table(results, data)
    for data in ("moons", "digits"):
        lines += student_table(results, data)
    lines += free_table(results)
    lines += ablation_table(results, args.runs) + ect_table(results) + final_step_table(results) + relations(results)
    iters = {name: e.get("iters") for name, e in results["runs"].items()}
    total = sum(s for s in (train_seconds(args.runs, n) for n in iters) if s)
    lines.append(f"Runs and iterations: {json.dumps(iters)}. Total training wall-clock: {total / 60:.1f} min.")
    (args.results / "study.md").write_text("\n".join(lines) + "\n")
    plot(results, args.results / "study.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
