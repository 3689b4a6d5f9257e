"""Training: a resumed run equals an uninterrupted one, bit for bit (weights, EMA, optimiser, log),
through the Python API and the CLI; and a 2-process gloo run under torchrun checkpoints once."""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_MOONS, VENV_BIN, run_fewstep
from fewstep.runs.config import TrainConfig, override, preset_for
from fewstep.data import Dataset, load_dataset
from fewstep.train.log import read_log
from fewstep.runs import train


def weights(run: Path) -> dict[str, torch.Tensor]:
    (path,) = run.glob("weights-*.safetensors")
    return load_file(str(path))


def assert_same_tensors(a: Path, b: Path, prefixes: tuple[str, ...] = ("model.", "ema.", "opt.")) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for prefix in prefixes:
        keys = [k for k in wa if k.startswith(prefix)]
        assert keys, f"no {prefix}* tensors"
        different = [k for k in keys if not torch.equal(wa[k], wb[k])]
        assert not different, f"{prefix}* tensors differ: {different[:5]}"


def losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_log(run / "log.jsonl") if "loss" in r]


def interrupted_and_straight(root: Path, config: TrainConfig, stop: int, dataset: Dataset | None = None) -> tuple[Path, Path]:
    """(run stopped after ``stop`` steps and resumed, the same run uninterrupted)."""
    resumed, straight = root / "resumed", root / "straight"
    train(config, straight, dataset=dataset, progress=False)
    train(config, resumed, dataset=dataset, stop_after=stop, progress=False)
    meta = json.loads((resumed / "checkpoint.json").read_text())
    assert meta["step"] == stop and len(list(resumed.glob("weights-*.safetensors"))) == 1
    assert not any(r.get("event") == "end" for r in read_log(resumed / "log.jsonl"))
    train(config, resumed, dataset=dataset, resume=True, progress=False)
    return resumed, straight


def moons_config(**flags) -> TrainConfig:
    tiny = dict(iters=40, batch=64, model_width=32, ckpt_every=10, eval_samples=100, device="cpu")
    return override(preset_for("moons", "points"), **{**tiny, **flags})


# --- determinism (the baseline every resume test relies on) ----------------------------------

def test_training_is_deterministic(tmp_path: Path) -> None:
    config = moons_config(iters=8)
    train(config, tmp_path / "a", progress=False)
    train(config, tmp_path / "b", progress=False)
    assert_same_tensors(tmp_path / "a", tmp_path / "b")
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_stop_after_checkpoints_at_the_stop(tmp_path: Path) -> None:
    train(moons_config(), tmp_path / "run", stop_after=15, progress=False)
    meta = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert meta["step"] == 15
    assert [p.name for p in (tmp_path / "run").glob("weights-*")] == ["weights-00000015.safetensors"]
    # No forced log line at the stop: the partial window travels in the checkpoint instead, so the
    # resumed run logs exactly what an uninterrupted one would.
    log_every = moons_config().log_every
    assert all(s % log_every == 0 and s <= 15 for s, _ in losses(tmp_path / "run"))
    assert len(meta["extra"]["log_window"]["loss"]) == 15 % log_every


# --- points: stop at 15 (between the checkpoints at 10 and 20), resume to 40 ------------------

@pytest.fixture(scope="module")
def moons_resume(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return interrupted_and_straight(tmp_path_factory.mktemp("moons_resume"), moons_config(), stop=15)


def test_resume_points_weights_ema_and_optimiser_bitwise_equal(moons_resume: tuple[Path, Path]) -> None:
    resumed, straight = moons_resume
    assert_same_tensors(resumed, straight)
    for run in moons_resume:
        assert json.loads((run / "checkpoint.json").read_text())["step"] == 40


def test_resume_points_log_final_loss_equal(moons_resume: tuple[Path, Path]) -> None:
    resumed, straight = moons_resume
    assert losses(resumed)[-1] == losses(straight)[-1]


def test_resume_points_log_has_each_step_once_and_every_loss_equal(tmp_path: Path) -> None:
    """With log lines every 5 steps the windows align, so every logged loss must match exactly."""
    resumed, straight = interrupted_and_straight(tmp_path, moons_config(log_every=5), stop=15)
    assert losses(resumed) == losses(straight)
    steps = Counter((r["step"], r.get("event"), "loss" in r) for r in read_log(resumed / "log.jsonl"))
    assert max(steps.values()) == 1, steps
    ends = [r for r in read_log(resumed / "log.jsonl") if r.get("event") == "end"]
    assert len(ends) == 1 and ends[0]["eval"] == [r for r in read_log(straight / "log.jsonl") if r.get("event") == "end"][0]["eval"]


# --- digits: a tiny UNet with the preset's dropout 0.1 (the dropout RNG must be restored) -------

@pytest.fixture(scope="module")
def small_digits() -> Dataset:
    """digits with 32 held-out images: the end-of-run variance table and quick evaluation stay cheap."""
    ds = load_dataset("digits")
    return dataclasses.replace(ds, heldout=ds.heldout[:32], heldout_labels=ds.heldout_labels[:32])


@pytest.fixture(scope="module")
def digits_resume(tmp_path_factory: pytest.TempPathFactory, small_digits: Dataset) -> tuple[Path, Path]:
    config = override(preset_for("digits", "images"), model_name="unet", model_width=8, iters=10, batch=16, eval_samples=32,
                      eval_steps=8, ckpt_every=3, log_every=2, device="cpu")
    assert config.model.dropout == 0.1 and config.model.name == "unet"
    return interrupted_and_straight(tmp_path_factory.mktemp("digits_resume"), config, stop=4, dataset=small_digits)


def test_resume_digits_unet_with_dropout_bitwise_equal(digits_resume: tuple[Path, Path]) -> None:
    resumed, straight = digits_resume
    assert_same_tensors(resumed, straight)
    assert losses(resumed) == losses(straight)


# --- the CLI: --stop-after then --resume equals the shared uninterrupted run -----------------

def test_cli_stop_after_and_resume_equal_an_uninterrupted_run(cli, moons_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = cli("train", "--out", out, *TINY_MOONS, "--stop-after", "10")
    assert code == 0, err
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 10
    code, _, err = cli("train", "--out", out, "--resume", "--no-progress")
    assert code == 0, err
    assert_same_tensors(out, moons_run)
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 30


# --- torchrun: 2 processes, gloo --------------------------------------------------------------

@pytest.mark.slow
def test_torchrun_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    torchrun = [str(VENV_BIN / "torchrun"), "--nproc_per_node=2", "--standalone", "-m", "fewstep.cli.main"]
    proc = run_fewstep("train", "--data", "moons", "--out", out, "--iters", "20", "--batch", "64", "--width", "32",
                       "--eval-samples", "100", "--no-progress", cwd=tmp_path, exe=torchrun, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in out.glob("weights-*.safetensors")] == ["weights-00000020.safetensors"]
    assert not list(out.glob(".*tmp*")), "temporary files left behind"
    log = read_log(out / "log.jsonl")
    starts = [r for r in log if r.get("event") == "start"]
    assert len(starts) == 1 and starts[0]["world_size"] == 2
    keys = Counter((r["step"], r.get("event"), "loss" in r, "eval" in r) for r in log)
    assert max(keys.values()) == 1, f"duplicate log lines: {keys}"
    assert [r["step"] for r in log if "loss" in r] == [20]
    assert sum(r.get("event") == "end" for r in log) == 1
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 20
