"""Every CLI command, smoke-tested: train, sample (.npz in data units, --png), evaluate (--json), demo,
distill; save → load gives identical samples; ``--help`` shows every flag with its default."""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fewstep
from conftest import run_fewstep, snapshot
from fewstep.cli.main import build_parser
from fewstep.runs.config import PRESETS, preset_for
from fewstep.data import load_dataset
from fewstep.evaluation import MANY_NFE, TRAINING_FREE, against_training_free, training_free_plan
from fewstep.train.log import read_log
from test_errors import assert_one_line_error


def open_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def assert_not_blank(pixels: np.ndarray) -> None:
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 2, "the PNG is a flat image"
    assert pixels.std() > 5


# --- train ------------------------------------------------------------------------------------

def test_train_writes_one_checkpoint_and_a_log(moons_run: Path) -> None:
    names = sorted(p.name for p in moons_run.iterdir())
    assert names == ["checkpoint.json", "config.json", "log.jsonl", "weights-00000030.safetensors"], names
    meta = json.loads((moons_run / "checkpoint.json").read_text())
    assert meta["step"] == 30 and meta["format_version"] == 1
    config = json.loads((moons_run / "config.json").read_text())
    assert config["iters"] == 30 and config["batch"] == 64 and config["model"]["width"] == 32 and config["eval_samples"] == 100
    log = read_log(moons_run / "log.jsonl")
    assert log[0]["event"] == "start" and log[0]["world_size"] == 1
    assert log[-1]["event"] == "end" and log[-1]["eval"]["n_samples"] == 100
    assert [r["step"] for r in log if "loss" in r] == [30]


def test_user_points_file_with_no_other_flags(cli, tmp_path: Path) -> None:
    """The issue's command: a user's .npy of points, no --eval-samples, no preset name."""
    rng = np.random.default_rng(3)
    points = np.concatenate([rng.normal([10.0, -4.0], 0.3, (300, 2)), rng.normal([14.0, -2.0], 0.3, (300, 2))])
    np.save(tmp_path / "my_points.npy", points)
    code, out, err = cli("train", "--data", tmp_path / "my_points.npy", "--out", tmp_path / "run", "--iters", "30",
                         "--batch", "64", "--width", "32", "--no-progress")
    assert code == 0, err
    assert "run saved" in out
    run = fewstep.load(tmp_path / "run")
    assert run.config.data == str(tmp_path / "my_points.npy")
    np.testing.assert_allclose(run.normaliser.shift, points.mean(0), rtol=1e-6)
    np.testing.assert_allclose(run.normaliser.scale, points.std(0), rtol=1e-6)
    samples = run.sample(200, steps=4, seed=0)
    assert samples.shape == (200, 2) and np.isfinite(samples).all()
    assert np.all(np.abs(samples.mean(0) - points.mean(0)) < points.std(0))  # the file's units, not N(0, 1)


def test_user_images_train_and_sample(cli, tmp_path: Path) -> None:
    """Images from a user's [N, H, W, C] uint8 file: the run samples uint8 [N, H, W, C] and a grid PNG."""
    rng = np.random.default_rng(0)
    images = np.zeros((40, 8, 8, 3), np.uint8)
    images[:, 2:6, 2:6] = rng.integers(100, 256, (40, 1, 1, 3), dtype=np.uint8)  # coloured squares
    np.save(tmp_path / "imgs.npy", images)
    code, _, err = cli("train", "--data", tmp_path / "imgs.npy", "--out", tmp_path / "run", "--iters", "2", "--batch", "8",
                       "--width", "8", "--eval-samples", "8", "--no-progress")
    assert code == 0, err
    code, out, err = cli("sample", "--run", tmp_path / "run", "--out", tmp_path / "s.npz", "-n", "6", "--steps", "2",
                         "--png", tmp_path / "s.png")
    assert code == 0, err
    samples = np.load(tmp_path / "s.npz")["samples"]
    assert samples.dtype == np.uint8 and samples.shape == (6, 8, 8, 3)
    np.testing.assert_array_equal(samples, fewstep.load(tmp_path / "run").sample(6, steps=2, seed=0))
    assert_not_blank(open_png(tmp_path / "s.png"))


# --- sample: save → load → identical samples -------------------------------------------------

@pytest.fixture(scope="module")
def sampled(moons_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``fewstep sample`` in a subprocess: 50 samples, DDIM, 4 steps, seed 1, with a PNG."""
    out = tmp_path_factory.mktemp("sampled")
    proc = run_fewstep("sample", "--run", moons_run, "--out", out / "s.npz", "-n", "50", "--steps", "4", "--sampler", "ddim",
                       "--seed", "1", "--png", out / "s.png", cwd=out)
    assert proc.returncode == 0, proc.stderr
    assert "50 samples" in proc.stdout
    return out


def test_load_twice_gives_identical_samples_equal_to_the_npz(moons_run: Path, sampled: Path) -> None:
    a = fewstep.load(moons_run).sample(50, steps=4, sampler="ddim", seed=1)
    b = fewstep.load(moons_run).sample(50, steps=4, sampler="ddim", seed=1)
    np.testing.assert_array_equal(a, b)
    with np.load(sampled / "s.npz") as npz:
        np.testing.assert_array_equal(npz["samples"], a)
        assert str(npz["sampler"]) == "ddim" and int(npz["steps"]) == 4 and int(npz["seed"]) == 1
    c = fewstep.load(moons_run).sample(50, steps=4, sampler="ddim", seed=2)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("sampler", ["ddim", "addim", "heun", "ancestral"])
def test_every_sampler_is_reproducible(moons_run: Path, sampler: str) -> None:
    run = fewstep.load(moons_run)
    a, b = (run.sample(20, steps=3, sampler=sampler, seed=5) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (20, 2) and np.isfinite(a).all()


def test_npz_holds_points_in_data_units(moons_run: Path, sampled: Path) -> None:
    run = fewstep.load(moons_run)
    moons = load_dataset("moons")
    assert run.normaliser == moons.normaliser
    samples = np.load(sampled / "s.npz")["samples"]
    model_units = run.sample_tensor(50, steps=4, sampler="ddim", seed=1).numpy()
    mean, std = np.asarray(moons.normaliser.shift), np.asarray(moons.normaliser.scale)
    np.testing.assert_allclose(samples, model_units * std + mean, rtol=1e-6, atol=1e-6)
    # moons' own units: mean ≈ (0.5, 0.25), std ≈ (0.87, 0.50) — not standardised N(0, 1) units.
    np.testing.assert_allclose(mean, [0.5, 0.25], atol=0.05)
    np.testing.assert_allclose(std, [0.87, 0.50], atol=0.05)
    assert abs(samples[:, 0].mean() - 0.5) < 0.3 and abs(model_units[:, 0].mean()) < 0.3


def test_sample_png_is_a_scatter_plot(sampled: Path) -> None:
    pixels = open_png(sampled / "s.png")
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert_not_blank(pixels)
    blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 100)  # matplotlib's tab:blue markers
    assert blue.sum() > 20


def test_sample_defaults_and_batch_size(cli, moons_run: Path, tmp_path: Path) -> None:
    """No --sampler/--steps: a teacher samples with DDIM; --batch-size changes nothing but memory."""
    code, out, err = cli("sample", "--run", moons_run, "--out", tmp_path / "a.npz", "-n", "40", "--steps", "3", "--batch-size", "7")
    assert code == 0, err
    assert "ddim" in out
    with np.load(tmp_path / "a.npz") as npz:
        assert str(npz["sampler"]) == "ddim" and npz["samples"].shape == (40, 2)


# --- evaluate ---------------------------------------------------------------------------------

def test_evaluate_writes_rows_with_spread_and_floor(moons_run: Path, tmp_path: Path) -> None:
    proc = run_fewstep("evaluate", "--run", moons_run, "--steps", "1,2", "-n", "100", "--seeds", "2", "--json",
                       tmp_path / "e.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "| ddim |" in proc.stdout
    report = json.loads((tmp_path / "e.json").read_text())
    rows = report["rows"]
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddim", 1), ("ddim", 2)]
    for r in rows:
        assert {"mean", "std", "floor", "n_samples"} <= set(r)
        assert r["n_samples"] == 100 and r["metric"] == "swd" and len(r["values"]) == 2
        assert r["mean"] == pytest.approx(np.mean(r["values"]))
        assert r["std"] == pytest.approx(np.std(r["values"], ddof=1))
        assert 0 < r["floor"] < r["mean"]
    assert report["protocol"]["samples_per_seed"] == 100 and report["protocol"]["seeds"] == [0, 1]


# --- evaluate a student: next to its teacher's training-free samplers ------------------------------

@pytest.fixture(scope="module")
def student_run(moons_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step student distilled in ROOT from ROOT/teacher (a copy of the shared run), both paths given
    relative to ROOT: its checkpoint names its teacher as "teacher"."""
    root = tmp_path_factory.mktemp("student")
    shutil.copytree(moons_run, root / "teacher")
    proc = run_fewstep("distill", "--teacher", "teacher", "--out", "student", "--student-steps", "2", "--iters", "3",
                       "--batch", "32", "--eval-samples", "20", "--no-progress", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert fewstep.load(root / "student").card.teacher == "teacher"
    return root / "student"


def test_evaluate_student_shows_the_best_training_free_sampler(cli, student_run: Path, tmp_path: Path) -> None:
    """Evaluated from elsewhere, the student finds its teacher above its own folder; its row shows the best
    training-free sampler within its 2 calls, the JSON holds the teacher's rows at 2 and 256 calls."""
    code, out, err = cli("evaluate", "--run", student_run, "-n", "40", "--seeds", "2", "--json", tmp_path / "e.json")
    assert code == 0, err
    assert "best training-free at ≤ NFE" in out and "training-free samplers" in out
    data = json.loads((tmp_path / "e.json").read_text())
    assert set(data) == {"protocol", "rows", "baselines"}
    baselines = data["baselines"]
    assert baselines and all(r["training_free"] for r in baselines)
    assert [(r["sampler"], r["steps"]) for r in baselines] == training_free_plan([2, MANY_NFE])
    assert {r["sampler"] for r in baselines} == set(TRAINING_FREE)
    assert all(r["n_samples"] == 40 and r["seeds"] == [0, 1] for r in baselines)
    assert any(r["nfe"] == 2 for r in baselines) and max(r["nfe"] for r in baselines) <= MANY_NFE
    assert data["protocol"]["baselines_teacher"] == str(student_run.parent / "teacher")
    (row,) = data["rows"]
    assert row["sampler"] == "consistency" and row["nfe"] == 2 and "training_free" not in row
    within = [r for r in baselines if r["nfe"] <= row["nfe"]]
    best = min(within, key=lambda r: r["mean"])
    assert (row["best_free"]["sampler"], row["best_free"]["steps"], row["best_free"]["mean"]) == (best["sampler"], best["steps"], best["mean"])
    bare = {k: v for k, v in row.items() if k not in ("best_free", "teacher_best", "excess_ratio")}
    (expected,) = against_training_free([bare], baselines)  # the teacher's best and the ratio as evaluation defines them
    assert row["teacher_best"] == expected["teacher_best"] and row["teacher_best"] in [
        {k: r[k] for k in row["teacher_best"]} for r in baselines]
    assert row.get("excess_ratio") == expected.get("excess_ratio")
    assert f"| {best['sampler']} ({best['steps']} steps): {best['mean']:.4f}" in out


def test_evaluate_student_no_baselines(cli, student_run: Path, tmp_path: Path) -> None:
    code, out, err = cli("evaluate", "--run", student_run, "-n", "40", "--seeds", "1", "--no-baselines", "--json", tmp_path / "e.json")
    assert code == 0, err
    assert "best training-free" not in out and "training-free samplers" not in out and not err
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["baselines"] == [] and "best_free" not in data["rows"][0] and "baselines_teacher" not in data["protocol"]


def test_evaluate_student_whose_teacher_is_gone(cli, student_run: Path, tmp_path: Path) -> None:
    """Moved away from its teacher: a note and the student's rows alone; --teacher brings the baselines back."""
    moved = tmp_path / "moved"
    shutil.copytree(student_run, moved)
    code, out, err = cli("evaluate", "--run", moved, "-n", "40", "--seeds", "1")
    assert code == 0, err
    assert "no training-free baselines" in err and "--teacher" in err and len(err.splitlines()) == 1
    assert "| consistency | 2 | 2 |" in out and "best training-free" not in out
    code, out, err = cli("evaluate", "--run", moved, "-n", "40", "--seeds", "1", "--teacher", student_run.parent / "teacher")
    assert code == 0, err
    assert "best training-free at ≤ NFE" in out and not err


@pytest.mark.parametrize("case", ["missing", "a student", "on a teacher"])
def test_evaluate_teacher_flag_errors_are_one_line(cli, moons_run: Path, student_run: Path, tmp_path: Path, case: str) -> None:
    run, teacher = {"missing": (student_run, tmp_path / "no_teacher"), "a student": (student_run, student_run),
                    "on a teacher": (moons_run, moons_run)}[case]
    code, out, err = cli("evaluate", "--run", run, "-n", "40", "--seeds", "1", "--teacher", teacher, "--json", tmp_path / "e.json")
    assert_one_line_error(code, err, "--teacher")
    assert {"missing": "no_teacher", "a student": "student; expected a diffusion teacher", "on a teacher": "is a diffusion teacher"}[case] in err
    assert not out and not (tmp_path / "e.json").exists()  # refused before any sampling


# --- distill ----------------------------------------------------------------------------------

def test_distill_smoke(cli, moons_run: Path, tmp_path: Path) -> None:
    before = snapshot(moons_run)
    code, _, err = cli("distill", "--teacher", moons_run, "--out", tmp_path / "student", "--student-steps", "2", "--iters", "3",
                       "--batch", "32", "--eval-samples", "20", "--no-progress")
    assert code == 0, err
    assert snapshot(moons_run) == before  # the teacher is read, never written
    student = fewstep.load(tmp_path / "student")
    # The default recipe picked the objective by the teacher's distance from its noise floor, and said so.
    said = re.search(r"\[distill\] objective (cd|ct): the teacher scores ([\d.]+)× its noise floor", err)
    assert said, err
    assert student.config.objective == said[1] == ("cd" if float(said[2]) <= 2.5 else "ct")
    assert student.default_sampler == "consistency" and student.default_steps == 2
    assert student.sample(10, seed=0).shape == (10, 2)


# --- help ------------------------------------------------------------------------------------

def help_entries(text: str) -> dict[str, str]:
    """Each option's help entry ('--flag META  help ... (default: x)'), keyed by every option string."""
    entries: list[str] = []
    for line in text.splitlines():
        if re.match(r"^  -", line):
            entries.append(line.strip())
        elif entries and re.match(r"^\s{6,}\S", line):
            entries[-1] += " " + line.strip()
        elif not line.strip() or not line.startswith(" "):
            entries.append("")  # a section break ends the entry
    keyed = {}
    for entry in filter(None, entries):
        for flag in re.findall(r"(?:^|, )(-{1,2}[\w-]+)", entry.split("  ")[0]):
            keyed[flag] = entry
    return keyed


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


NO_DEFAULT = "--seed and --device are added without help text, so ArgumentDefaultsHelpFormatter shows no default for them "


@pytest.mark.parametrize("command", [
    "train",
    "distill",
    "sample",
    "evaluate",
    "export",
    "demo",
])
def test_help_lists_every_flag_with_its_default(cli, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = cli(command, "--help")
    assert code == 0
    entries = help_entries(out)
    flags = [a.option_strings[-1] for a in subparser(command)._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert flags, "no flags found"
    missing = [f for f in flags if f not in entries]
    assert not missing, f"flags not listed in `fewstep {command} --help`: {missing}"
    no_default = [f for f in flags if "(default:" not in entries[f]]
    assert not no_default, f"flags without a shown default in `fewstep {command} --help`: {no_default}"


def test_train_help_lists_the_main_flags(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = cli("train", "--help")
    assert code == 0
    entries = help_entries(out)
    for flag, default in [("--resume", "False"), ("--overwrite", "False"), ("--no-progress", "False"), ("--objective", "diffusion"),
                          ("--student-steps", "4")]:
        assert f"(default: {default})" in entries[flag], entries[flag]
    for flag in ("--data", "--out", "--iters", "--batch", "--lr", "--model", "--width", "--dropout", "--precision", "--eval-every",
                 "--ckpt-every", "--log-every", "--eval-samples", "--stop-after"):
        assert "(default:" in entries[flag], entries[flag]


def test_train_help_states_the_current_presets(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    _, out, _ = cli("train", "--help")
    entry = help_entries(out)["--iters"]
    assert f"moons {preset_for('moons', 'points').iters}" in entry and f"digits {PRESETS['digits'].iters}" in entry, entry


# --- demo ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_demo_quick_runs_then_reuses_its_runs(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    first = run_fewstep("demo", "--quick", "--out", out, cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["datasets"]) == {"moons", "digits"}
    for data, info in results["datasets"].items():
        assert info["rows"] and all({"mean", "std", "floor"} <= set(r) for r in info["rows"])
        assert info["pngs"]
        for name in info["pngs"]:
            assert_not_blank(open_png(out / name))
    assert (out / "results.md").is_file()
    report = json.loads((out / "report.json").read_text())  # report.html from the same rows, not re-evaluated
    assert [r["rows"] for r in report["runs"]] == [results["datasets"][d]["rows"] for d in ("moons", "digits")]
    assert "<table" in (out / "report.html").read_text()
    # Each data set has its teacher and, in --quick, one 4-step student of the default recipe (CD or CT by the
    # teacher's distance from its floor, as the output says) in the table, next to the best
    # training-free sampler within 4 calls; the teacher's 256-call rows are its reference, evaluated once.
    for info in results["datasets"].values():
        assert any(r["sampler"].startswith(("MCM-CD (S=4", "MCM-CT (S=4")) and r["nfe"] == 4 for r in info["rows"]), info["rows"]
        teacher = [r for r in info["rows"] if not r["sampler"].startswith("MCM-")]
        assert all(r["training_free"] for r in teacher) and ("unipc", 4) in [(r["sampler"], r["steps"]) for r in teacher]
        assert len({(r["sampler"], r["steps"]) for r in teacher}) == len(teacher)  # nothing evaluated twice
        for r in info["rows"]:
            if r["sampler"].startswith("MCM-"):
                assert r["best_free"]["nfe"] <= 4 and r["teacher_best"]["nfe"] <= MANY_NFE
                assert r["best_free"]["mean"] == min(t["mean"] for t in teacher if t["nfe"] <= 4)
        assert MANY_NFE in {r["nfe"] for r in teacher}
    weights = {p: p.stat().st_mtime_ns for p in out.glob("*/weights-*.safetensors")}
    assert len(weights) == 4  # 2 teachers + 2 students
    assert first.stdout.count(" students: c") == 2 and "noise floor" in first.stdout

    second = run_fewstep("demo", "--quick", "--out", out, cwd=tmp_path, timeout=180)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.count("reusing") == 4, second.stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/weights-*.safetensors")} == weights
