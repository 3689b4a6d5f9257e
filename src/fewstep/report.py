"""One self-contained HTML report of evaluated runs: plot, table, protocol, speed and sample grids.

The page opens offline: the only images are PNGs inlined as ``data:image/png;base64`` URIs, the CSS is
inline and there is no script. Every piece of text goes through :func:`html.escape`, and void elements
are self-closed, so the page is also well-formed XML. ``report.json`` beside it holds the same data
(without the pictures). Usage::

    entry = collect(run, dataset, rows)           # rows from fewstep.evaluation.evaluate_run
    write_report(Path("out"), [entry], overwrite=False)
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .errors import UserError
from .evaluation import METRIC_LABELS, protocol
from .io import check_writable, figure_png, pyplot, render_png, save_bytes, save_json

if TYPE_CHECKING:
    from .runs import Run
    from .data import Dataset

GRID_IMAGES = 64    # an 8 × 8 grid
GRID_POINTS = 1000  # a scatter plot over the held-out split in grey
CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #eee; text-align: left; } td.text { text-align: left; }
.grids { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { font-size: 0.85em; text-align: center; }
img.grid { width: 260px; image-rendering: pixelated; } img.plot { max-width: 100%; }
"""


@dataclass
class Grid:
    """A PNG (sample grid or scatter plot) and its caption."""

    caption: str
    png: bytes


@dataclass
class RunReport:
    """One evaluated run: its rows (``evaluate_run``), their protocol and sample grids."""

    title: str
    protocol: dict[str, Any]
    rows: list[dict[str, Any]]
    grids: list[Grid] = field(default_factory=list)


def collect(run: Run, dataset: Dataset, rows: list[dict[str, Any]], *, title: str | None = None,
            grids: list[Grid] | None = None) -> RunReport:
    """A :class:`RunReport`; without ``grids``, one grid (seed 0) per (sampler, steps, w) in ``rows``."""
    if grids is None:
        grids = [sample_grid(run, dataset, r["sampler"], r["steps"], _asked_w(run, r), r.get("interval")) for r in rows]
    return RunReport(title or str(run.workdir), protocol(run, dataset, rows), rows, grids)


def _asked_w(run: Run, row: dict[str, Any]) -> float | None:
    """The ``guidance`` to sample a row's grid with: its w when it guided or the run is w-conditioned."""
    return row.get("w") if row.get("guided") or run.guidance_range is not None else None


def sample_grid(run: Run, dataset: Dataset, spec: str, steps: int, guidance: float | None = None,
                interval: Sequence[float] | None = None) -> Grid:
    """An image grid (classes in turn for a conditional run), or a scatter plot over the held-out split, of
    seed-0 samples."""
    n = GRID_IMAGES if dataset.kind == "images" else GRID_POINTS
    samples = run.sample(n, steps=steps, sampler=spec, seed=0, guidance=guidance,
                         interval=tuple(interval) if interval else None)  # type: ignore[arg-type]
    reference = dataset.to_data_units(dataset.heldout[:GRID_POINTS]) if dataset.kind == "points" else None
    caption = f"{spec}, {steps} steps" + (f", w = {guidance:g}" if guidance is not None else "")
    return Grid(caption, render_png(samples, dataset.kind, title=caption, reference=reference))


def grids_from_files(paths: Sequence[Path]) -> list[Grid]:
    """PNG files already written (e.g. by ``fewstep demo``), captioned by file name."""
    return [Grid(Path(p).stem.replace("_", " "), Path(p).read_bytes()) for p in paths]


def check_out(out: Path, overwrite: bool, arg: str = "out") -> tuple[Path, Path]:
    """The report's two paths in ``out``; refused (one line) if they exist and ``overwrite`` is not set."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; expected a folder", arg=arg)
    return check_writable(out / "report.html", arg, overwrite), check_writable(out / "report.json", arg, overwrite)


def write_report(out: Path, reports: list[RunReport], *, overwrite: bool, arg: str = "out") -> Path:
    """Write ``out/report.html`` and ``out/report.json``; returns the HTML's path."""
    html_path, json_path = check_out(out, overwrite, arg)
    plot = quality_plot(reports)
    save_bytes(html_path, render_html(reports, plot, guidance_plot(reports)).encode("utf-8"))
    save_json(json_path, report_data(reports))
    return html_path


def report_data(reports: list[RunReport]) -> dict[str, Any]:
    """What the HTML shows, as JSON: protocol and rows per run, and the grid captions."""
    from . import __version__

    return {"fewstep_version": __version__,
            "runs": [{"title": r.title, "protocol": r.protocol, "rows": r.rows, "grids": [g.caption for g in r.grids]}
                     for r in reports]}


# --- the plot -------------------------------------------------------------------------------------

def quality_plot(reports: list[RunReport]) -> bytes:
    """Metric mean ± std against NFE (log x), one panel per data set, one line per run and sampler;
    each run's noise floor is a dashed line."""
    groups: dict[tuple[str, str], list[RunReport]] = {}
    for r in reports:
        if r.rows:
            groups.setdefault((r.protocol["data"], r.rows[0]["metric"]), []).append(r)
    plt = pyplot()
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(5.5 * max(len(groups), 1), 4.2), squeeze=False)
    for ax, ((data, metric), members) in zip(axes[0], groups.items()):
        _plot_panel(ax, data, metric, members)
    fig.tight_layout()
    png = figure_png(fig)
    plt.close(fig)
    return png


def _line_label(row: dict[str, Any]) -> str:
    """A sampler, and for a conditional run the w it stands for (guided: 2 calls per step, in the NFE)."""
    if row.get("w") is None:
        return row["sampler"]
    return f"{row['sampler']}, w {row['w']:g}" + (" guided" if row.get("guided") else "") + (" (interval)" if row.get("interval") else "")


def _plot_panel(ax: Any, data: str, metric: str, members: list[RunReport]) -> None:
    for i, report in enumerate(members):
        colour_floor = f"C{i}"
        for j, line in enumerate(dict.fromkeys(_line_label(r) for r in report.rows)):
            rows = sorted((r for r in report.rows if _line_label(r) == line and math.isfinite(r["mean"])), key=lambda r: r["nfe"])
            ax.errorbar([r["nfe"] for r in rows], [r["mean"] for r in rows], yerr=[r["std"] for r in rows],
                        marker="o", ms=4, capsize=2, color=f"C{(i * 3 + j) % 10}", label=f"{report.title}: {line}")
        floors = [r["floor"] for r in report.rows if math.isfinite(r["floor"])]
        if floors:
            ax.axhline(sum(floors) / len(floors), ls="--", lw=1, color=colour_floor if len(members) > 1 else "gray",
                       label=f"{report.title}: noise floor")
    ax.set_xscale("log")
    ax.set_yscale("log")  # few-step errors span orders of magnitude; near the floor a linear axis hides them
    ticks: list[int] = []
    for nfe in sorted({r["nfe"] for report in members for r in report.rows}, reverse=True):
        if not ticks or nfe < 0.85 * ticks[-1]:  # Heun's 2N − 1 would print 255 over 256 on a log axis
            ticks.append(nfe)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("NFE (network evaluations per sample)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(f"{data}: {METRIC_LABELS.get(metric, metric)} against NFE (lower is better)", fontsize=10)
    ax.legend(fontsize=7)


def guidance_plot(reports: list[RunReport]) -> bytes | None:
    """FD against class accuracy over the guidance sweep: one line per run, sampler and step count through
    its w values (each point labelled with w); None when no run was evaluated at several w."""
    lines = {}
    for report in reports:
        for row in report.rows:
            if "class_accuracy" in row and row.get("w") is not None and math.isfinite(row["mean"]):
                lines.setdefault((report.title, row["sampler"], row["steps"]), []).append(row)
    lines = {k: sorted(v, key=lambda r: r["w"]) for k, v in lines.items() if len({r["w"] for r in v}) > 1}
    if not lines:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for k, ((title, sampler, steps), rows) in enumerate(lines.items()):
        xs, ys = [r["class_accuracy"] for r in rows], [r["mean"] for r in rows]
        ax.plot(xs, ys, marker="o", ms=4, color=f"C{k % 10}", label=f"{title}: {sampler}, {steps} steps")
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(f"w={r['w']:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    reference = next(r["class_accuracy_reference"] for rows in lines.values() for r in rows)
    ax.axvline(reference, ls="--", lw=1, color="gray", label=f"real held-out data: {reference:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("class accuracy (share of samples classified as the class asked for)")
    ax.set_ylabel(METRIC_LABELS.get(next(iter(lines.values()))[0]["metric"], "metric"))
    ax.set_title("guidance sweep: quality against class accuracy", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = figure_png(fig)
    plt.close(fig)
    return png


# --- the page -------------------------------------------------------------------------------------

def render_html(reports: list[RunReport], plot_png: bytes, guidance_png: bytes | None = None) -> str:
    """The whole page as one string."""
    from . import __version__

    body = [
        _tag("h1", "fewstep report"),
        _tag("p", f"fewstep {__version__}; {len(reports)} run(s). Lower is better for every metric; the noise floor is "
                  "what a perfect generator of the same number of samples scores."),
        _tag("h2", "Quality against NFE"),
        _img(plot_png, "quality against NFE", "plot"),
        *([_tag("h2", "Guidance: quality against class accuracy"), _img(guidance_png, "quality against class accuracy", "plot")]
          if guidance_png is not None else []),
        _tag("h2", "Results"),
        _results_table(reports),
        _tag("h2", "Sampling speed"),
        _speed_table(reports),
        _tag("h2", "Protocol"),
        *[_protocol_section(r) for r in reports],
        _tag("h2", "Samples"),
        *[_grids_section(r) for r in reports],
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\" />\n<title>fewstep report</title>\n"
            f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def _tag(name: str, text: str, cls: str = "") -> str:
    attr = f' class="{html.escape(cls)}"' if cls else ""
    return f"<{name}{attr}>{html.escape(text)}</{name}>"


def _img(png: bytes, alt: str, cls: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{html.escape(cls)}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}" />'


def _num(x: float) -> str:
    if isinstance(x, float) and math.isinf(x):
        return "∞ (diverged)"
    if isinstance(x, float) and math.isnan(x):
        return "–"
    return f"{x:.4g}"


def _table(headers: list[str], rows: list[list[str]], table_id: str, text_columns: int = 1) -> str:
    """A <table>; the first ``text_columns`` cells of each row are left-aligned text."""
    head = "<tr>" + "".join(_tag("th", h) for h in headers) + "</tr>"
    body = ["<tr>" + "".join(_tag("td", c, "text" if k < text_columns else "") for k, c in enumerate(row)) + "</tr>" for row in rows]
    return f'<table id="{html.escape(table_id)}">\n<thead>{head}</thead>\n<tbody>\n' + "\n".join(body) + "\n</tbody>\n</table>"


def _results_table(reports: list[RunReport]) -> str:
    fid = any("fid" in row for r in reports for row in r.rows)
    free = any("best_free" in row for r in reports for row in r.rows)  # a student next to its teacher's training-free samplers
    guided = any(row.get("w") is not None for r in reports for row in r.rows)
    accuracy = any("class_accuracy" in row for r in reports for row in r.rows)
    headers = ["run", "data", "sampler", "steps", "NFE"] + (["w"] if guided else []) + ["metric", "mean ± std over seeds", "noise floor"]
    headers += ["class accuracy (real data)"] if accuracy else []
    headers += ["FID mean ± std", "FID floor"] if fid else []
    headers += ["best training-free at ≤ NFE", "excess ratio"] if free else []
    cells = []
    for r in reports:
        for row in r.rows:
            line = [r.title, r.protocol["data"], row["sampler"], str(row["steps"]), str(row["nfe"])]
            line += [_line_label(row).partition(", w ")[2] or "–"] if guided else []
            line += [METRIC_LABELS.get(row["metric"], row["metric"]), f"{_num(row['mean'])} ± {_num(row['std'])}", _num(row["floor"])]
            if accuracy:
                line += [f"{_num(row['class_accuracy'])} ± {_num(row['class_accuracy_std'])} ({_num(row['class_accuracy_reference'])})"
                         if "class_accuracy" in row else "–"]
            if fid:
                line += [f"{_num(row['fid'])} ± {_num(row['fid_std'])}", _num(row.get("fid_floor", math.nan))] if "fid" in row else ["–", "–"]
            if free:
                line += _free_cells(row)
            cells.append(line)
    return _table(headers, cells, "results", text_columns=3)


def _free_cells(row: dict[str, Any]) -> list[str]:
    """The best training-free sampler within the row's NFE and the excess ratio (docs/math.md §11), or dashes."""
    best = row.get("best_free")
    if best is None:
        return ["–", "–"]
    ratio = row.get("excess_ratio")
    at = f", w {best['w']:g}" + (" guided" if best.get("guided") else "") if best.get("w") is not None else ""
    return [f"{best['sampler']} ({best['steps']} steps{at}, NFE {best['nfe']}): {_num(best['mean'])} ± {_num(best['std'])}",
            _num(ratio) if ratio is not None else "–"]


def _speed_table(reports: list[RunReport]) -> str:
    cells = [[r.title, row["sampler"], str(row["steps"]), str(row["nfe"]), f"{row['samples_per_s']:.1f}", r.protocol.get("device", "")]
             for r in reports for row in r.rows]
    return _table(["run", "sampler", "steps", "NFE", "samples/s", "device"], cells, "speed", text_columns=2)


def _protocol_section(report: RunReport) -> str:
    items = [[key, _protocol_value(value)] for key, value in _flatten(report.protocol)]
    return _tag("h3", report.title) + "\n" + _table(["field", "value"], items, f"protocol-{_slug(report.title)}", text_columns=2)


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in d.items():
        if isinstance(value, dict) and value and all(isinstance(v, (str, int, float, bool, type(None))) for v in value.values()):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _protocol_value(value: Any) -> str:
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_protocol_value(v)}" for k, v in value.items())
    return str(value)


def _grids_section(report: RunReport) -> str:
    figures = [f"<figure>{_img(g.png, g.caption, 'grid')}{_tag('figcaption', g.caption)}</figure>" for g in report.grids]
    return _tag("h3", report.title) + '\n<div class="grids">\n' + "\n".join(figures) + "\n</div>"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-") or "run"
