"""``fewstep evaluate``'s JSON protocol and ``--fid-weights`` (with a stand-in TorchScript network, never
a download), and ``fewstep report``: one self-contained HTML page that parses, has one table row per
evaluated (run, sampler, steps), an inlined PNG plot, no network references, and renders in a browser."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

import fewstep
from conftest import run_fewstep, snapshot
from fewstep.data import load_dataset
from fewstep.evaluation import MANY_NFE, TRAINING_FREE, against_training_free, training_free_plan
from fewstep.metrics import floor_sample, frechet_from_features, get_classifier
from fewstep.report import RunReport, render_html
from test_cli import help_entries, subparser
from test_errors import assert_one_line_error

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")  # the stand-in is TorchScript
CHROMIUM = Path("/usr/bin/chromium")
DATA_PNG = "data:image/png;base64,"


# --- fixtures -------------------------------------------------------------------------------------

class StandInInception(nn.Module):
    """The TorchScript contract of inception-2015-12-05.pt: float images [N, 3, H, W] in [0, 255] →
    ``features`` dims with return_features=True. Here a fixed random projection of 4 × 4-pooled pixels."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.register_buffer("proj", torch.randn(3 * 4 * 4, features, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        if x.shape[1] != 3 or bool(x.min() < 0) or bool(x.max() > 255):
            raise ValueError("expected [N, 3, H, W] in [0, 255]")
        f = F.adaptive_avg_pool2d(x / 255.0, 4).flatten(1) @ self.proj  # [N, 48] → [N, F]
        return f if return_features else f[:, :10]


class WrongShape(nn.Module):
    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        return x.mean(1)  # [N, H, W]: not features [N, F]


def save_script(module: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    return path


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-iteration digits teacher (labelled images: FD-classifier is the headline metric)."""
    root = tmp_path_factory.mktemp("digits_run")
    proc = run_fewstep("train", "--data", "digits", "--out", root / "run", "--iters", "2", "--batch", "8", "--width", "8",
                       "--eval-samples", "8", "--no-progress", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "run"


@pytest.fixture(scope="module")
def report_dir(moons_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``fewstep report`` of the shared moons teacher and a 2-step student distilled from it."""
    root = tmp_path_factory.mktemp("report")
    proc = run_fewstep("distill", "--teacher", moons_run, "--out", root / "student", "--student-steps", "2", "--iters", "3",
                       "--batch", "32", "--eval-samples", "20", "--no-progress", cwd=root)
    assert proc.returncode == 0, proc.stderr
    proc = run_fewstep("report", moons_run, root / "student", "--out", root / "out", "-n", "60", "--seeds", "2",
                       "--steps", "1,2", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert "report written to" in proc.stdout and "| addim |" in proc.stdout
    return root / "out"


# The shared teacher's rows in the report at --steps 1,2: every training-free sampler at 1 and 2 steps but
# dpmpp2m and unipc (DDIM there), and the 256-call baselines its 2-step student is compared with, by sampler.
TEACHER_ROWS = [("ddim", 1), ("ddim", 2), ("ddim", 256), ("addim", 1), ("addim", 2), ("addim", 256), ("dpmpp2m", 256),
                ("unipc", 256), ("heun", 1), ("heun", 2), ("heun", 128)]


# --- evaluate: the protocol -----------------------------------------------------------------------

def test_evaluate_json_holds_the_points_protocol(cli, moons_run: Path, tmp_path: Path) -> None:
    code, out, err = cli("evaluate", "--run", moons_run, "--sampler", "ddim,addim", "--steps", "1,2", "-n", "50",
                         "--seeds", "2", "--json", tmp_path / "e.json")
    assert code == 0, err
    assert "| ddim | 1 | 1 |" in out and "noise floor" in out  # the printed table stays
    proto = json.loads((tmp_path / "e.json").read_text())["protocol"]
    assert proto["fewstep_version"] == fewstep.__version__
    assert proto["data"] == "moons" and proto["heldout"] == len(load_dataset("moons").heldout)
    assert proto["samples_per_seed"] == 50 and proto["seeds"] == [0, 1]
    assert proto["samplers"] == ["ddim", "addim"] and proto["steps"] == {"ddim": [1, 2], "addim": [1, 2]}
    assert proto["feature_network"]["network"] == "SWD on points, 256 projections, seed 0"
    assert "fid" not in proto


def test_evaluate_json_names_the_classifier_and_its_checksum(cli, digits_run: Path, tmp_path: Path) -> None:
    code, _, err = cli("evaluate", "--run", digits_run, "--steps", "1", "-n", "20", "--seeds", "1", "--json", tmp_path / "e.json")
    assert code == 0, err
    proto = json.loads((tmp_path / "e.json").read_text())["protocol"]
    clf = get_classifier(load_dataset("digits"))
    assert proto["feature_network"]["metric"] == "fd_classifier"
    assert proto["feature_network"]["classifier_sha256"] == clf.checksum
    assert proto["feature_network"]["classifier_accuracy"] == pytest.approx(clf.accuracy)
    assert proto["data"] == "digits" and proto["heldout"] == len(load_dataset("digits").heldout)


# --- evaluate: --fid-weights ----------------------------------------------------------------------

def uint8_features(model: torch.jit.ScriptModule, images: np.ndarray) -> Tensor:
    """Features of uint8 images [N, H, W, 1] (data units), as the standard FID code feeds them."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().repeat(1, 3, 1, 1)  # [N, 3, H, W] in [0, 255]
    return model(x, return_features=True)


def test_fid_weights_matches_a_direct_computation(cli, digits_run: Path, tmp_path: Path) -> None:
    """64-d stand-in features: the Fréchet distance of 2048-d ones costs ~25 s of scipy sqrtm on this CPU."""
    weights = save_script(StandInInception(64), tmp_path / "inception.pt")
    n = 100
    code, out, err = cli("evaluate", "--run", digits_run, "--steps", "1", "-n", n, "--seeds", "2", "--fid-weights", weights,
                         "--json", tmp_path / "e.json")
    assert code == 0, err
    assert "FID" in out and "FD-classifier" in out
    report = json.loads((tmp_path / "e.json").read_text())
    (row,) = report["rows"]
    assert report["protocol"]["fid"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert report["protocol"]["fid"]["feature_dim"] == 64

    model, run, dataset = torch.jit.load(str(weights)), fewstep.load(digits_run, device="cpu"), load_dataset("digits")
    reference = uint8_features(model, dataset.to_data_units(dataset.heldout))
    fids = [frechet_from_features(uint8_features(model, run.sample(n, steps=1, sampler="ddim", seed=s)), reference) for s in (0, 1)]
    floors = [frechet_from_features(uint8_features(model, dataset.to_data_units(floor_sample(dataset, n, s))), reference) for s in (0, 1)]
    # float32 features batched differently: equal up to rounding
    assert row["fid_values"] == pytest.approx(fids, rel=1e-6)
    assert row["fid"] == pytest.approx(np.mean(fids), rel=1e-6) and row["fid_std"] == pytest.approx(np.std(fids, ddof=1), rel=1e-4)
    assert row["fid_floor"] == pytest.approx(np.mean(floors), rel=1e-6)
    assert 0 < row["fid_floor"] < row["fid"]


def test_inception_features_are_n_by_2048(digits_run: Path, tmp_path: Path) -> None:
    from fewstep.metrics.inception import InceptionFID

    fid = InceptionFID.load(save_script(StandInInception(2048), tmp_path / "inception.pt"))
    assert fid.features(load_dataset("digits").heldout[:7]).shape == (7, 2048)


@pytest.mark.parametrize("case", ["missing", "garbage", "wrong_shape"])
def test_fid_weights_errors_are_one_line(cli, digits_run: Path, tmp_path: Path, case: str) -> None:
    path = tmp_path / "inception.pt"
    if case == "garbage":
        path.write_bytes(b"not a TorchScript archive")
    elif case == "wrong_shape":
        save_script(WrongShape(), path)
    before = snapshot(tmp_path)
    code, _, err = cli("evaluate", "--run", digits_run, "--steps", "1", "-n", "10", "--seeds", "1", "--fid-weights", path,
                       "--json", tmp_path / "e.json")
    assert_one_line_error(code, err, "--fid-weights", str(path) if case != "wrong_shape" else "[N, F]")
    assert snapshot(tmp_path) == before


def test_fid_weights_on_points_is_one_line(cli, moons_run: Path, tmp_path: Path) -> None:
    weights = save_script(StandInInception(8), tmp_path / "inception.pt")
    code, _, err = cli("evaluate", "--run", moons_run, "--steps", "1", "-n", "10", "--seeds", "1", "--fid-weights", weights)
    assert_one_line_error(code, err, "--fid-weights", "images", "points")


# --- report ---------------------------------------------------------------------------------------

class TagBalance(HTMLParser):
    """Every start tag closed in order (``<img ... />`` counts as both)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack.append(tag)
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def parse(text: str) -> TagBalance:
    checker = TagBalance()
    checker.feed(text)
    checker.close()
    assert not checker.stack, f"unclosed tags: {checker.stack}"
    return checker


def decode_png(src: str) -> Image.Image:
    assert src.startswith(DATA_PNG)
    im = Image.open(io.BytesIO(base64.b64decode(src[len(DATA_PNG):], validate=True)))
    assert im.format == "PNG"
    return im


def test_report_html_is_valid_and_self_contained(report_dir: Path) -> None:
    text = (report_dir / "report.html").read_text(encoding="utf-8")
    tags = parse(text).tags
    root = ET.fromstring(text)  # well-formed XML too
    assert root.tag == "html" and root.find("head/title") is not None
    assert not re.search(r"https?://", text), "the page must open offline"
    assert not {t for t, _ in tags} & {"script", "link", "iframe"}
    srcs = [a["src"] for t, a in tags if t == "img"]
    assert srcs and all(s.startswith(DATA_PNG) for s in srcs)
    plot = decode_png(next(a["src"] for t, a in tags if t == "img" and a.get("class") == "plot")).convert("RGB")
    assert len(np.unique(np.asarray(plot).reshape(-1, 3), axis=0)) > 10


def test_report_table_has_one_row_per_run_sampler_steps(report_dir: Path, moons_run: Path) -> None:
    root = ET.fromstring((report_dir / "report.html").read_text(encoding="utf-8"))
    table = root.find(".//table[@id='results']")
    header = [th.text for th in table.findall("thead/tr/th")]
    cells = [[td.text for td in tr.findall("td")] for tr in table.findall("tbody/tr")]
    key = [(c[header.index("run")], c[header.index("sampler")], c[header.index("steps")]) for c in cells]
    teacher, student = str(moons_run), str(report_dir.parent / "student")
    assert key == [(teacher, spec, str(s)) for spec, s in TEACHER_ROWS] + [(student, "consistency", "2")]
    assert all("±" in c[header.index("mean ± std over seeds")] for c in cells)
    # the student next to the best training-free sampler within its 2 calls; the teacher's rows have none
    best, ratio = header.index("best training-free at ≤ NFE"), header.index("excess ratio")
    assert all(c[best] == "–" and c[ratio] == "–" for c in cells[:-1])
    assert re.fullmatch(r"(ddim|addim|heun) \(\d steps, NFE [12]\): \S+ ± \S+", cells[-1][best]), cells[-1][best]
    grids = root.findall(".//img[@class='grid']")
    assert len(grids) == len(TEACHER_ROWS) + 1 and all(decode_png(g.get("src")).size[0] > 50 for g in grids)


def test_report_json_holds_the_same_rows_and_protocol(report_dir: Path) -> None:
    data = json.loads((report_dir / "report.json").read_text())
    assert data["fewstep_version"] == fewstep.__version__
    teacher, student = data["runs"]
    assert [(r["sampler"], r["steps"]) for r in teacher["rows"]] == TEACHER_ROWS
    assert [(r["sampler"], r["steps"]) for r in student["rows"]] == [("consistency", 2)]
    assert all(r["training_free"] for r in teacher["rows"])
    (row,) = student["rows"]
    best = min((r for r in teacher["rows"] if r["nfe"] <= 2), key=lambda r: r["mean"])
    assert (row["best_free"]["sampler"], row["best_free"]["steps"]) == (best["sampler"], best["steps"])
    bare = {k: v for k, v in row.items() if k not in ("best_free", "teacher_best", "excess_ratio")}
    assert row["teacher_best"] == against_training_free([bare], teacher["rows"])[0]["teacher_best"]
    assert teacher["protocol"]["samples_per_seed"] == 60 and teacher["protocol"]["seeds"] == [0, 1]
    assert student["protocol"]["objective"] != "diffusion"
    assert all(r["samples_per_s"] > 0 for r in teacher["rows"] + student["rows"])


def test_report_refuses_an_existing_page(cli, report_dir: Path, moons_run: Path) -> None:
    before = snapshot(report_dir)
    code, _, err = cli("report", moons_run, "--out", report_dir, "-n", "10", "--seeds", "1")
    assert_one_line_error(code, err, "--out", "report.html", "--overwrite")
    assert snapshot(report_dir) == before


def test_report_names_a_bad_run(cli, tmp_path: Path) -> None:
    code, _, err = cli("report", tmp_path / "no_run", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "RUN", "no_run")
    assert not (tmp_path / "out").exists()


def test_report_escapes_text() -> None:
    row = {"sampler": "<b>x</b>", "steps": 1, "nfe": 1, "metric": "swd", "mean": 1.0, "std": 0.0, "floor": float("nan"),
           "samples_per_s": 1.0}
    text = render_html([RunReport("<script>alert(1)</script>", {"data": "a&b"}, [row])], b"png")
    assert "<script>" not in text and "&lt;script&gt;" in text and "a&amp;b" in text and "&lt;b&gt;x" in text
    parse(text)
    ET.fromstring(text)


def test_report_student_without_its_teacher_gets_a_training_free_entry(cli, report_dir: Path, moons_run: Path,
                                                                       tmp_path: Path) -> None:
    """A student reported without its teacher: the teacher's training-free rows become their own entry."""
    code, _, err = cli("report", report_dir.parent / "student", "--out", tmp_path / "out", "-n", "30", "--seeds", "1")
    assert code == 0, err
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    student, baselines = data["runs"]
    assert baselines["title"] == f"{moons_run} (training-free)" and baselines["protocol"]["run"] == str(moons_run)
    assert [(r["sampler"], r["steps"]) for r in baselines["rows"]] == sorted(
        training_free_plan([2, MANY_NFE]), key=lambda p: (TRAINING_FREE.index(p[0]), p[1]))
    assert "best_free" in student["rows"][0] and "best training-free" in (tmp_path / "out" / "report.html").read_text()


def test_results_table_shows_best_free_and_excess_ratio() -> None:
    base = {"steps": 1, "metric": "swd", "std": 0.0, "floor": 0.01, "samples_per_s": 1.0}
    best = {"sampler": "addim", "steps": 4, "nfe": 4, "mean": 0.7, "std": 0.05, "values": [0.7]}
    rows = [{**base, "sampler": "consistency", "nfe": 4, "mean": 0.3, "best_free": best, "teacher_best": {**best, "mean": 0.1},
             "excess_ratio": 1 / 3},
            {**base, "sampler": "consistency", "nfe": 1, "mean": 0.9}]
    root = ET.fromstring(render_html([RunReport("student", {"data": "moons"}, rows)], b"png"))
    table = root.find(".//table[@id='results']")
    header = [th.text for th in table.findall("thead/tr/th")]
    assert header[-2:] == ["best training-free at ≤ NFE", "excess ratio"]
    cells = [[td.text for td in tr.findall("td")] for tr in table.findall("tbody/tr")]
    assert cells[0][-2:] == ["addim (4 steps, NFE 4): 0.7 ± 0.05", "0.3333"] and cells[1][-2:] == ["–", "–"]
    no_free = ET.fromstring(render_html([RunReport("t", {"data": "moons"}, rows[1:])], b"png"))
    assert "excess ratio" not in [th.text for th in no_free.findall(".//table[@id='results']/thead/tr/th")]


def test_report_help_shows_every_default(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = cli("report", "--help")
    assert code == 0
    entries = help_entries(out)
    flags = [a.option_strings[-1] for a in subparser("report")._actions if a.option_strings and a.option_strings[-1] != "--help"]
    assert all("(default:" in entries[f] for f in flags), flags


# --- a real browser -------------------------------------------------------------------------------

def test_report_renders_in_chromium(report_dir: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"chromium not installed: {CHROMIUM} is missing (apt-get install chromium)")
    shot = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
           (report_dir / "report.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1200)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, "a flat screenshot"
    assert (pixels.min(axis=2) < 200).mean() > 0.01, "almost nothing drawn"
