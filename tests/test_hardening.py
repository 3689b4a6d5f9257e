"""Hardening: the EMA's closed form, non-finite steps, runs killed at random moments (also before their
first checkpoint), complex data, and every objective under torchrun with 2 gloo processes."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import FEWSTEP, TINY_MOONS, VENV_BIN, cli_env, mlp_denoiser, run_fewstep, snapshot
from safetensors.torch import load_file

from fewstep.batch import Batch, RandomBatches
from fewstep.objectives import DiffusionObjective
from fewstep.train.checkpoint import read_checkpoint
from fewstep.train.ema import EMA, decay_from_halflife
from fewstep.train.log import JsonlLog, read_log
from fewstep.train.loop import SPIKE, SPIKE_WARMUP, LoopSettings, NonFiniteStep, fit, lr_at


# --- EMA: closed form -------------------------------------------------------------------------------

def test_ema_matches_its_closed_form() -> None:
    """After updates with values p_1..p_k from p_0: ema_k = β^k p_0 + (1 − β) Σ_i β^(k−i) p_i."""
    halflife = 3.0
    beta = decay_from_halflife(halflife)
    assert beta**halflife == pytest.approx(0.5, rel=1e-12)
    net = torch.nn.Linear(3, 2)
    net.register_buffer("count", torch.zeros(()))
    p0 = net.weight.detach().clone()
    ema = EMA(net, halflife)
    values = [torch.randn(2, 3, generator=torch.Generator().manual_seed(i)) for i in range(1, 7)]
    for i, v in enumerate(values, start=1):
        with torch.no_grad():
            net.weight.copy_(v)
            net.count.fill_(i)
        ema.update(net)
    k = len(values)
    expected = beta**k * p0 + (1 - beta) * sum(beta ** (k - i) * v for i, v in enumerate(values, start=1))
    assert torch.allclose(ema.model.weight, expected, rtol=1e-5, atol=1e-6)
    assert ema.model.count.item() == k  # buffers are copied, not averaged
    assert not any(p.requires_grad for p in ema.model.parameters())
    # A half-life of 0 steps (or less than one) keeps no history: the EMA is the latest weights.
    assert decay_from_halflife(0.0) == 0.0
    none = EMA(net, 0.0)
    with torch.no_grad():
        net.weight.add_(1.0)
    none.update(net)
    assert torch.equal(none.model.weight, net.weight)


# --- non-finite steps -----------------------------------------------------------------------------------

class NaNAt:
    """The diffusion objective, with a NaN loss at the given (0-based) steps."""

    def __init__(self, bad_steps: set[int]) -> None:
        self.inner, self.bad = DiffusionObjective(), bad_steps
        self.name, self.sampler = "diffusion", self.inner.sampler

    def __call__(self, denoiser, x, cond, step, generator):
        out = self.inner(denoiser, x, cond, step, generator)
        if step in self.bad:
            out.loss = out.loss * float("nan")
        return out

    def state(self):
        return {}

    def finalize(self, ema, heldout):
        return {}


def _fit(workdir: Path, objective, iters: int = 12, evaluate=None, **settings) -> dict:
    torch.manual_seed(0)
    denoiser = mlp_denoiser(2)
    data = Batch(torch.randn(256, 2, generator=torch.Generator().manual_seed(1)))
    loop = LoopSettings(iters=iters, lr=1e-3, ckpt_every=4, log_every=2, ema_halflife=2.0, **settings)
    return fit(denoiser, objective, RandomBatches(data, 32), workdir, loop, device=torch.device("cpu"),
               config={"test": True}, card={}, evaluate=evaluate, progress=False)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteStep, match=r"^step 7: the loss is nan .* last checkpoint .* is kept") as info:
        _fit(tmp_path / "run", NaNAt({6}))
    assert str(info.value).count("\n") == 0
    ckpt = read_checkpoint(tmp_path / "run")
    assert ckpt.step == 4 and all(torch.isfinite(v).all() for v in ckpt.model.values())
    events = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r.get("event") == "nonfinite"]
    assert [e["step"] for e in events] == [7]


def test_skipped_nan_steps_change_no_weight(tmp_path: Path) -> None:
    card = _fit(tmp_path / "skip", NaNAt({5, 9}), max_bad_steps=2)
    assert card["loop"]["bad_steps"] == 2
    ckpt = read_checkpoint(tmp_path / "skip")
    assert ckpt.step == 12 and all(torch.isfinite(v).all() for v in ckpt.model.values())
    # A skipped step is a no-op: 6 steps whose last is skipped leave the weights and EMA of 5 clean steps.
    _fit(tmp_path / "last", NaNAt({5}), iters=6, max_bad_steps=1)
    _fit(tmp_path / "five", NaNAt(set()), iters=5)
    last, five = read_checkpoint(tmp_path / "last"), read_checkpoint(tmp_path / "five")
    assert all(torch.equal(last.model[k], five.model[k]) and torch.equal(last.ema[k], five.ema[k]) for k in five.model)
    with pytest.raises(NonFiniteStep, match="^step 10: "):
        _fit(tmp_path / "one", NaNAt({5, 9}), max_bad_steps=1)


def test_gradient_spikes_are_logged(tmp_path: Path) -> None:
    class Spiky(NaNAt):
        def __call__(self, denoiser, x, cond, step, generator):
            out = self.inner(denoiser, x, cond, step, generator)
            if step == 30:
                out.loss = out.loss * 1e4
            return out

    _fit(tmp_path / "run", Spiky(set()), iters=40)
    spikes = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r.get("event") == "grad_spike"]
    assert [s["step"] for s in spikes] == [31] and spikes[0]["grad_norm"] > 10 * spikes[0]["running_mean"]


class GradNorms(NaNAt):
    """A loss c_k · Σ_params Σ p: its gradient is c_k in every entry, so the step's gradient norm is c_k √P
    (P parameters), whatever the weights are."""

    def __init__(self, scales: dict[int, float]) -> None:
        super().__init__(set())
        self.scales = scales

    def __call__(self, denoiser, x, cond, step, generator):
        out = self.inner(denoiser, x, cond, step, generator)
        out.loss = self.scales.get(step, 1.0) * sum(p.sum() for p in denoiser.parameters())
        return out


def test_the_spike_detector_follows_its_running_mean_and_waits_out_its_warm_up(tmp_path: Path) -> None:
    """m_1 = n_1, m_k = 0.9 m_(k−1) + 0.1 n_k; step k (1-based) is a spike when k > SPIKE_WARMUP and
    n_k > SPIKE · m_(k−1). A spike at step SPIKE_WARMUP itself is still in the warm-up and not logged."""
    spike = 1e4
    scales = {SPIKE_WARMUP - 1: spike, SPIKE_WARMUP + 5: spike}  # 0-based steps: logged as steps 20 and 26
    iters = SPIKE_WARMUP + 8
    card = _fit(tmp_path / "run", GradNorms(scales), iters=iters, grad_clip=1e9)
    root_p = sum(p.numel() for p in mlp_denoiser(2).parameters()) ** 0.5
    norms = [scales.get(k, 1.0) * root_p for k in range(iters)]
    means = [norms[0]]
    for n in norms[1:]:
        means.append(0.9 * means[-1] + 0.1 * n)
    spikes = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r.get("event") == "grad_spike"]
    assert [s["step"] for s in spikes] == [SPIKE_WARMUP + 6]
    assert spikes[0]["grad_norm"] == pytest.approx(norms[SPIKE_WARMUP + 5], rel=1e-4)
    assert spikes[0]["running_mean"] == pytest.approx(means[SPIKE_WARMUP + 4], rel=1e-4)
    assert spikes[0]["grad_norm"] > SPIKE * spikes[0]["running_mean"]
    assert card["loop"]["grad_norm_mean"] == pytest.approx(means[-1], rel=1e-4)


def test_the_learning_rate_warms_up_linearly_then_stays(tmp_path: Path) -> None:
    """lr_k = lr · min(1, (k + 1) / warmup) at 0-based step k (no warm-up: lr from the first step); the log
    records the rate of each window's last step."""
    warm = LoopSettings(iters=10, lr=2.0, warmup=4)
    assert [lr_at(warm, k) for k in range(7)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0]
    for warmup in (0, 1):
        assert [lr_at(LoopSettings(iters=10, lr=2.0, warmup=warmup), k) for k in range(3)] == [2.0, 2.0, 2.0]
    _fit(tmp_path / "run", NaNAt(set()), iters=6, warmup=4)
    logged = {r["step"]: r["lr"] for r in read_log(tmp_path / "run" / "log.jsonl") if "lr" in r}
    assert logged == pytest.approx({2: 0.5e-3, 4: 1e-3, 6: 1e-3})


def test_evaluations_are_logged_every_eval_every_steps_and_at_the_end(tmp_path: Path) -> None:
    calls = []

    def evaluate(ema_denoiser):
        calls.append(ema_denoiser)
        return {"n": len(calls)}

    card = _fit(tmp_path / "run", NaNAt(set()), iters=8, evaluate=evaluate, eval_every=3)
    evals = [(r["step"], r["eval"]["n"]) for r in read_log(tmp_path / "run" / "log.jsonl") if "eval" in r]
    assert evals == [(3, 1), (6, 2), (8, 3)]  # the last one is the end's (its record says event "end")
    assert card["final_eval"] == {"n": 3}
    # eval_every 0: only at the end.
    calls.clear()
    _fit(tmp_path / "end", NaNAt(set()), iters=8, evaluate=evaluate)
    assert [r["step"] for r in read_log(tmp_path / "end" / "log.jsonl") if "eval" in r] == [8]


def test_the_logged_speed_is_steps_over_seconds(tmp_path: Path, monkeypatch) -> None:
    """it_per_s = steps in the log window / seconds since the last record, on a clock that advances 0.25 s a call."""
    import types

    from fewstep.train import loop

    clock = iter(0.25 * k for k in range(10_000))
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    _fit(tmp_path / "run", NaNAt(set()), iters=6)
    speeds = [r["it_per_s"] for r in read_log(tmp_path / "run" / "log.jsonl") if "it_per_s" in r]
    assert speeds == [8.0, 8.0, 8.0]  # 2 steps a record (log_every=2), 0.25 s between the two clock reads


def test_fit_wraps_a_cpu_backbone_in_ddp_under_torchrun(tmp_path: Path, monkeypatch) -> None:
    """Under torchrun (WORLD_SIZE > 1) on CPUs (gloo) the backbone is wrapped with no device ids, trained,
    and handed back bare. One process stands in for the group here."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    monkeypatch.setenv("WORLD_SIZE", "2")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    seen = []

    class Watch(NaNAt):
        def __call__(self, denoiser, x, cond, step, generator):
            seen.append(isinstance(denoiser.backbone, DistributedDataParallel))
            return super().__call__(denoiser, x, cond, step, generator)

    try:
        _fit(tmp_path / "run", Watch(set()), iters=2)
    finally:
        dist.destroy_process_group()
    assert seen == [True, True]
    assert read_checkpoint(tmp_path / "run").step == 2


# --- crashes ---------------------------------------------------------------------------------------------

def test_a_log_line_cut_short_by_a_crash_is_dropped_on_resume(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 0, "event": "start"}\n{"step": 2, "loss": 1.0}\n{"step": 4, "loss": 0.9}\n{"step": 6, "lo')
    JsonlLog(log).truncate_after(4)
    assert [r["step"] for r in read_log(log)] == [0, 2, 4]


TRAIN = [*TINY_MOONS[:-1], "--iters", "120", "--ckpt-every", "10", "--log-every", "10"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    (path,) = run.glob("weights-*.safetensors")
    return load_file(str(path))


def test_resume_without_a_checkpoint_starts_from_step_zero(cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"step": 0, "event": "start"}\n{"step": 1')  # killed before any checkpoint
    code, _, err = cli("train", "--out", run, "--resume", *TINY_MOONS)
    assert code == 0 and "no checkpoint yet: starting from step 0" in err, err
    code, _, err = cli("train", "--out", tmp_path / "ref", *TINY_MOONS)
    assert code == 0, err
    assert all(torch.equal(v, _weights(tmp_path / "ref")[k]) for k, v in _weights(run).items())
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    code, _, err = cli("train", "--out", other, "--resume", *TINY_MOONS)
    assert code == 2 and "holds no fewstep run to continue" in err and snapshot(tmp_path) == before


@pytest.mark.slow
def test_kill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    ref = run_fewstep("train", "--out", tmp_path / "ref", *TRAIN, cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    run, rng, kills = tmp_path / "run", random.Random(20261128), 0
    for attempt in range(12):
        args = ["train", "--out", str(run), *TRAIN] + (["--resume"] if attempt else [])
        proc = subprocess.Popen([FEWSTEP, *args], cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if attempt < 4:  # four kills at random moments: during start-up, training or a checkpoint write
            time.sleep(rng.uniform(0.3, 4.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0 and json.loads((run / "checkpoint.json").read_text())["step"] == 120:
            break
        assert proc.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
    assert kills >= 2, "the run finished before it could be killed; raise the iteration count"
    assert not list(run.glob(".*tmp*")), "temporary files left behind"
    want, have = _weights(tmp_path / "ref"), _weights(run)
    assert want.keys() == have.keys() and all(torch.equal(want[k], have[k]) for k in want)
    steps = [r["step"] for r in read_log(run / "log.jsonl") if "loss" in r]
    assert steps == [r["step"] for r in read_log(tmp_path / "ref" / "log.jsonl") if "loss" in r]


# --- data ---------------------------------------------------------------------------------------------------

def test_complex_data_is_refused(cli, tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", (np.random.default_rng(0).normal(size=(50, 2)) * (1 + 1j)).astype(np.complex64))
    before = snapshot(tmp_path)
    code, _, err = cli("train", "--data", tmp_path / "c.npy", "--out", tmp_path / "run", "--iters", "1")
    assert code == 2 and err.count("\n") == 1 and "--data: " in err and "complex64; expected real numbers" in err
    assert snapshot(tmp_path) == before


# --- every objective under torchrun -------------------------------------------------------------------

def torchrun_two_processes(tmp_path: Path, *args: Any, iters: int) -> dict[str, Any]:
    """``fewstep ARGS --out tmp/run`` under torchrun with 2 gloo processes; checks that both ranks trained
    to ``iters`` with finite weights and returns the final log record (its quick evaluation)."""
    out = tmp_path / "run"
    torchrun = [str(VENV_BIN / "torchrun"), "--nproc_per_node=2", "--standalone", "-m", "fewstep.cli.main"]
    proc = run_fewstep(*args, "--out", out, "--iters", str(iters), "--ckpt-every", str(iters // 2), "--no-progress",
                       cwd=tmp_path, exe=torchrun, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = read_log(out / "log.jsonl")
    assert [r for r in log if r.get("event") == "start"][0]["world_size"] == 2
    ckpt = read_checkpoint(out)
    assert ckpt.step == iters and all(torch.isfinite(v).all() for v in ckpt.model.values())
    (end,) = [r for r in log if r.get("event") == "end"]
    return end


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["cd", "ct", "ect", "mect"])
def test_torchrun_two_processes_train_every_student_objective(moons_run: Path, tmp_path: Path, objective: str) -> None:
    end = torchrun_two_processes(tmp_path, "train", "--objective", objective, "--teacher", moons_run, "--student-steps", "2",
                                 "--batch", "32", "--eval-samples", "101", iters=12)
    assert end["eval"]["n_samples"] == 101  # 51 + 50, drawn on two ranks and gathered


@pytest.fixture(scope="module")
def digits_cond_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-iteration class-conditional digits teacher (digits are labelled: conditional by default)."""
    root = tmp_path_factory.mktemp("digits_cond")
    proc = run_fewstep("train", "--data", "digits", "--out", root / "run", "--iters", "20", "--batch", "32", "--width", "32",
                       "--eval-samples", "20", "--no-progress", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "run"


@pytest.mark.slow
@pytest.mark.parametrize("guidance", [["--guidance", "2"], ["--guidance-range", "1,4"]])
def test_torchrun_two_processes_distil_a_guided_teacher(digits_cond_run: Path, tmp_path: Path, guidance: list[str]) -> None:
    """A fixed-w and a w-conditioned student of a guided teacher under DDP; the quick evaluation samples every
    class on both ranks and reports the class accuracy of all of them."""
    end = torchrun_two_processes(tmp_path, "distill", "--teacher", digits_cond_run, "--student-steps", "2", *guidance,
                                 "--batch", "16", "--eval-samples", "41", iters=8)
    assert end["eval"]["n_samples"] == 41 and 0.0 <= end["eval"]["class_accuracy"] <= 1.0


TINY_TEXT = ["--text-encoder", f"tiny:{Path(__file__).parent / 'data' / 'tokenizer.json'}"]


@pytest.fixture(scope="module")
def digits_text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-iteration caption-conditioned digits-text teacher on the tiny text encoder."""
    root = tmp_path_factory.mktemp("digits_text")
    proc = run_fewstep("train", "--data", "digits-text", "--out", root / "run", "--iters", "6", "--batch", "16", "--width", "8",
                       *TINY_TEXT, "--eval-samples", "10", "--no-progress", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "run"


@pytest.mark.slow
def test_torchrun_two_processes_train_a_text_teacher(tmp_path: Path) -> None:
    """Both ranks give every caption the same id (each builds the bank in the data's order); the quick
    evaluation samples the held-out captions on both ranks and scores every sample's prompt."""
    end = torchrun_two_processes(tmp_path, "train", "--data", "digits-text", "--batch", "16", "--width", "8", *TINY_TEXT,
                                 "--eval-samples", "21", iters=4)
    assert end["eval"]["n_samples"] == 21 and 0.0 <= end["eval"]["fidelity_thickness"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("guidance", [["--guidance", "2"], ["--guidance-range", "1,4"]])
def test_torchrun_two_processes_distil_a_guided_text_teacher(digits_text_run: Path, tmp_path: Path, guidance: list[str]) -> None:
    end = torchrun_two_processes(tmp_path, "distill", "--teacher", digits_text_run, "--student-steps", "2", *guidance,
                                 "--batch", "16", "--eval-samples", "21", iters=4)
    assert end["eval"]["n_samples"] == 21 and 0.0 <= end["eval"]["fidelity_digit"] <= 1.0


def test_the_stop_grad_reference_runs_on_the_bare_backbone_under_ddp(tmp_path: Path) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from fewstep.objectives.common import same_mask_reference

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        denoiser = mlp_denoiser(2)
        bare = denoiser.backbone
        assert denoiser.unwrapped() is denoiser
        denoiser.backbone = DistributedDataParallel(bare)
        assert denoiser.unwrapped().backbone is bare

        calls = []
        bare.register_forward_hook(lambda *_: calls.append("bare"))
        denoiser.backbone.register_forward_hook(lambda *_: calls.append("ddp"))
        z, t = torch.randn(4, 2), torch.full((4,), 0.5)
        ref = same_mask_reference(denoiser, z, t, None)
        assert calls == ["bare"]  # DDP's forward (and its gradient bookkeeping) never ran
        assert torch.equal(ref, denoiser(z, t).x_hat.detach())
    finally:
        dist.destroy_process_group()


# --- data larger than memory: streamed .npy and image folders -----------------------------------------

def test_sharded_order_is_an_epoch_shuffle_split_over_ranks() -> None:
    from fewstep.data.stream import ShardedOrder

    n, batch, world = 10, 3, 2
    ranks = [ShardedOrder(n, batch, seed=5, rank=r, world=world) for r in range(world)]
    seen = [p for step in range(5) for r in ranks for p in r.positions(step)]  # 30 positions = 3 epochs
    for epoch in range(3):
        assert sorted(seen[epoch * n : (epoch + 1) * n]) == list(range(n))  # every example once an epoch
    assert set(ranks[0].positions(2)).isdisjoint(ranks[1].positions(2)) or n % (batch * world)
    fresh = ShardedOrder(n, batch, seed=5, rank=1, world=world)
    assert fresh.positions(4) == ranks[1].positions(4)  # a function of the step: resumable anywhere
    assert ShardedOrder(n, batch, seed=6).positions(0) != ShardedOrder(n, batch, seed=5).positions(0)


def _png_folder(folder: Path, n: int, side: int = 8) -> None:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(folder / f"{i:04d}.png")


@pytest.mark.parametrize("kind", ["npy", "folder", "captioned"])
def test_streamed_data_matches_the_in_memory_split_and_resumes_exactly(cli, tmp_path: Path, kind: str) -> None:
    """A captioned folder streams its images with each batch's captions (held in memory), conditional by default."""
    from fewstep.data import LazyExamples, load_dataset

    text: list[str] = []
    if kind == "npy":
        data = tmp_path / "points.npy"
        np.save(data, np.random.default_rng(1).normal(size=(600, 2)).astype(np.float32) * 3 + 1)
    else:
        data = tmp_path / "images"
        _png_folder(data, 60)
    if kind == "captioned":
        words = ("dark", "light", "noisy", "plain")
        (data / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"{i:04d}.png", "text": f"a {words[i % 4]} square {i % 7}"}) + "\n"
                                                     for i in range(60)))
        text = TINY_TEXT
    memory, streamed = load_dataset(str(data), "memory"), load_dataset(str(data), "stream")
    assert isinstance(streamed.train, LazyExamples) and streamed.shape == memory.shape
    assert streamed.normaliser == memory.normaliser or kind == "npy"
    assert torch.allclose(streamed.heldout, memory.heldout, atol=1e-5)
    assert torch.allclose(streamed.train[torch.tensor([3, 0, 7])], memory.train[[3, 0, 7]], atol=1e-5)
    assert streamed.train_std() == pytest.approx(memory.train_std(), rel=1e-6)

    common = ["--data", data, "--data-loader", "stream", "--workers", "2", "--iters", "16", "--batch", "8", "--model", "mlp", "--width", "16", "--dropout", "0.1",
              "--eval-samples", "16", "--ckpt-every", "100", "--no-progress", *text]
    code, _, err = cli("train", "--out", tmp_path / "full", *common)
    assert code == 0, err
    code, _, err = cli("train", "--out", tmp_path / "part", *common, "--stop-after", "7")
    assert code == 0, err
    code, _, err = cli("train", "--out", tmp_path / "part", "--resume", "--iters", "16", "--no-progress")
    assert code == 0, err
    assert all(torch.equal(v, _weights(tmp_path / "full")[k]) for k, v in _weights(tmp_path / "part").items())
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["data_loader"] == "stream" and config["workers"] == 2
    assert config["cond"] == ("text" if kind == "captioned" else "none")


# --- a busy CPU ----------------------------------------------------------------------------------------------

def test_threads_take_the_idle_cores_unless_the_user_chose(monkeypatch) -> None:
    from fewstep.train import threads

    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for busy, expected in ((0.0, 2), (0.4, 2), (0.9, 1), (1.0, 1), (2.0, 1)):
        monkeypatch.setattr(threads, "busy_cores", lambda seconds=0.3, b=busy: b)
        assert threads.choose_threads() == expected, busy
    assert threads.choose_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.choose_threads() == torch.get_num_threads()


def test_busy_cores_sees_a_busy_process() -> None:
    from fewstep.train.threads import busy_cores

    idle = busy_cores(0.5)
    if idle > (os.cpu_count() or 1) - 1:
        pytest.skip(f"{idle:.1f} cores are busy already: one more process would not show")
    spinner = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.2)
        busy = busy_cores(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy > idle + 0.5, (idle, busy)
