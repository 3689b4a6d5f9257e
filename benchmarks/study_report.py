"""Markdown tables and the paper's relations, checked, from benchmarks/results/study.json.

    python benchmarks/study_report.py [--results benchmarks/results] [--runs benchmarks/runs]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

LABEL = {"moons": "SWD", "digits": "FD-classifier"}
SAMPLER_NAMES = {"ddim": "DDIM", "addim": "aDDIM (c: table)", "addim:data_free": "aDDIM (b: data-free)", "heun": "Heun"}


def fmt(row: dict[str, Any] | None) -> str:
    return "—" if row is None else f"{row['mean']:.4f} ± {row['std']:.4f}"


def teacher_row(results: dict, data: str, sampler: str, steps: int) -> dict | None:
    rows = results["runs"].get(f"teacher-{data}", {}).get("rows", [])
    return next((r for r in rows if r["sampler"] == sampler and r["steps"] == steps), None)


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
    steps = sorted({r["steps"] for r in results["runs"].get(f"teacher-{data}", {}).get("rows", []) if r["sampler"] in SAMPLER_NAMES})
    if not steps:
        return []
    floor = teacher_row(results, data, "ddim", steps[-1])["floor"]
    head = " | ".join(SAMPLER_NAMES.values())
    lines = [f"#### {data}: teacher samplers, {LABEL[data]} (mean ± std over 3 seeds; noise floor {floor:.4f})", "",
             f"| steps | {head} |", "|---:|" + "---:|" * len(SAMPLER_NAMES)]
    for s in steps:
        cells = []
        for sampler in SAMPLER_NAMES:
            row = teacher_row(results, data, sampler, s)
            cells.append(fmt(row) + (f" ({row['nfe']} NFE)" if row and row["nfe"] != s else ""))
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines + [""]


def student_table(results: dict, data: str) -> list[str]:
    ref = teacher_row(results, data, "ddim", 256)
    lines = [f"#### {data}: multistep consistency students, {LABEL[data]} (teacher DDIM at 256 steps: {fmt(ref)})", "",
             "| S | teacher DDIM, S steps | teacher aDDIM (c), S steps | MCM-CD (aDDIM teacher) | MCM-CT (from teacher) | CD / teacher-256 |",
             "|---:|---:|---:|---:|---:|---:|"]
    for s in (1, 2, 4, 8, 16):
        cd, ct = student(results, f"{data}-cd-S{s}"), student(results, f"{data}-ct-S{s}")
        if cd is None and ct is None:
            continue
        ratio = f"{cd['mean'] / ref['mean']:.2f}×" if cd and ref else "—"
        lines.append(f"| {s} | {fmt(teacher_row(results, data, 'ddim', s))} | {fmt(teacher_row(results, data, 'addim', s))} | {fmt(cd)} | {fmt(ct)} | {ratio} |")
    return lines + [""]


def ablation_table(results: dict, runs: Path) -> list[str]:
    lines = ["#### moons: ablations (SWD, each run's own iterations)", "", "| group | run | iterations | SWD | floor | train s |", "|---|---|---:|---:|---:|---:|"]
    for name, entry in results["runs"].items():
        if not entry.get("group", "").startswith("ablation") and not (name.startswith("moons-cd-S4") or name.startswith("moons-cd-S8") or name.startswith("moons-cd-S2")):
            continue
        row = student(results, name)
        secs = train_seconds(runs, name)
        lines.append(f"| {entry.get('group', 'main')} | {name} | {entry.get('iters', '—')} | {fmt(row)} | {row['floor']:.4f} | {secs:.0f} |" if row else f"| {entry['group']} | {name} | — | — | — | — |")
    return lines + [""]


def rows_of(results: dict, name: str) -> list[dict]:
    return results["runs"].get(name, {}).get("rows", [])


def ect_table(results: dict) -> list[str]:
    """ECT at 1 and 2 steps against MCM-CD/CT at S = 1, 2; multistep ECT against MCM at S = 2, 4, 8."""
    lines = ["#### ECT against multistep consistency, same teacher and budget", "",
             "| data | steps | ECT | multistep ECT | MCM-CD | MCM-CT |", "|---|---:|---:|---:|---:|---:|"]
    for data in ("moons", "digits"):
        ect = {r["steps"]: r for r in rows_of(results, f"{data}-ect")}
        for s in (1, 2, 4, 8):
            cells = [fmt(ect.get(s)), fmt(student(results, f"{data}-mect-S{s}")), fmt(student(results, f"{data}-cd-S{s}")),
                     fmt(student(results, f"{data}-ct-S{s}"))]
            if any(c != "—" for c in cells[:2]):
                lines.append(f"| {data} | {s} | " + " | ".join(cells) + " |")
    return lines + [""]


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
    """Quality against network calls (log x): teacher samplers as lines, students as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, data in zip(axes, ("moons", "digits")):
        teacher = results["runs"].get(f"teacher-{data}", {}).get("rows", [])
        for sampler, style in (("ddim", "-o"), ("addim", "-s"), ("addim:data_free", "--s"), ("heun", ":^")):
            rows = sorted((r for r in teacher if r["sampler"] == sampler), key=lambda r: r["nfe"])
            if rows:
                ax.plot([r["nfe"] for r in rows], [r["mean"] for r in rows], style, ms=3, label=f"teacher {SAMPLER_NAMES[sampler]}")
        for kind, marker in (("cd", "*"), ("ct", "D"), ("mect", "P")):
            pts = [(s, student(results, f"{data}-{kind}-S{s}")) for s in (1, 2, 4, 8, 16)]
            pts = [(s, r["mean"]) for s, r in pts if r]
            if pts:
                ax.plot(*zip(*pts), marker, ms=9 if marker == "*" else 6, label=f"MCM-{kind.upper()}" if kind != "mect" else "multistep ECT")
        ect = rows_of(results, f"{data}-ect")
        if ect:
            ax.plot([r["steps"] for r in ect], [r["mean"] for r in ect], "X", ms=8, label="ECT")
        if teacher:
            ax.axhline(teacher[0]["floor"], color="gray", ls="--", lw=1, label="noise floor")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylim(top=max(2.0 if data == "moons" else 3000, ax.get_ylim()[0]))
        ax.set_xlabel("network calls (NFE)")
        ax.set_ylabel(LABEL[data])
        ax.set_title(data)
        ax.legend(fontsize=7)
    fig.tight_layout()
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
    lines += ablation_table(results, args.runs) + ect_table(results) + final_step_table(results) + relations(results)
    iters = {name: e.get("iters") for name, e in results["runs"].items()}
    total = sum(s for s in (train_seconds(args.runs, n) for n in iters) if s)
    lines.append(f"Runs and iterations: {json.dumps(iters)}. Total training wall-clock: {total / 60:.1f} min.")
    (args.results / "study.md").write_text("\n".join(lines) + "\n")
    plot(results, args.results / "study.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
