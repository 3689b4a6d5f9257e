"""Shared fixtures: the exact denoiser of Gaussian data (docs/math.md §8); CLI helpers and a tiny trained run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import Tensor

from fewstep.param import Prediction, batch_times, expand_like
from fewstep.schedules import CosineSchedule, Schedule

# Tests use small tensors; on a busy 2-core CPU, intra-op threads spin against each other and make
# some sampler loops ~50x slower (measured), so the suite runs single-threaded.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"  # in-process CLI calls keep it (fewstep.train.threads)


class GaussianDenoiser:
    """Exact E[x | z_t] for x ~ N(μ, s² I) (docs/math.md §8), with the closed-form posterior and flow map."""

    def __init__(self, schedule: Schedule, mu: Tensor, std: float) -> None:
        self.schedule = schedule
        self.mu = mu      # [D]
        self.std = std    # s

    def _coef(self, t: Tensor | float, z: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = self.schedule.alpha_sigma(batch_times(t, z))
        return expand_like(alpha, z).to(z.dtype), expand_like(sigma, z).to(z.dtype)

    def __call__(self, z_t: Tensor, t: Tensor | float, cond: Tensor | None = None) -> Prediction:
        alpha, sigma = self._coef(t, z_t)
        mu = self.mu.to(z_t.dtype)
        # E[x | z_t] = μ + α s² (z_t − α μ)/(α² s² + σ²)
        x_hat = mu + alpha * self.std**2 * (z_t - alpha * mu) / (alpha**2 * self.std**2 + sigma**2)
        return Prediction(x_hat, (z_t - alpha * x_hat) / sigma)

    def posterior_var(self, t: Tensor | float, z: Tensor) -> Tensor:
        """Var[x | z_t] per dimension, broadcastable against z: s² σ²/(α² s² + σ²)."""
        alpha, sigma = self._coef(t, z)
        return self.std**2 * sigma**2 / (alpha**2 * self.std**2 + sigma**2)

    def flow_map(self, z_t: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        """Exact probability-flow map Φ_{t→s}(z_t)."""
        alpha_t, sigma_t = self._coef(t, z_t)
        alpha_s, sigma_s = self._coef(s, z_t)
        v_t = alpha_t**2 * self.std**2 + sigma_t**2
        v_s = alpha_s**2 * self.std**2 + sigma_s**2
        mu = self.mu.to(z_t.dtype)
        return alpha_s * mu + (v_s / v_t).sqrt() * (z_t - alpha_t * mu)


@pytest.fixture
def gaussian_denoiser() -> GaussianDenoiser:
    """d = 4, μ = (1, −0.5, 0.25, 2), s = 0.5, cosine schedule, float64 μ."""
    mu = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=torch.float64)
    return GaussianDenoiser(CosineSchedule(), mu, 0.5)


# ---------------------------------------------------------------------------------------------
# CLI and training fixtures (test_cli, test_errors, test_train): one classifier cache for the
# whole session, subprocess helpers, and one tiny trained moons run shared by every module.
# ---------------------------------------------------------------------------------------------
VENV_BIN = Path(sys.executable).parent
FEWSTEP = str(VENV_BIN / "fewstep")
TINY_MOONS = ["--data", "moons", "--iters", "30", "--batch", "64", "--width", "32", "--eval-samples", "100", "--no-progress"]


@pytest.fixture(scope="session", autouse=True)
def fewstep_cache(tmp_path_factory: pytest.TempPathFactory):
    """FEWSTEP_CACHE for in-process calls and subprocesses alike, so the digits classifier trains once."""
    cache = tmp_path_factory.mktemp("fewstep_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWSTEP_CACHE", str(cache))
        yield cache


def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: one thread, the session's cache, a wide help text."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def run_fewstep(*args: str, cwd: Path, timeout: float = 120, exe: list[str] | None = None) -> subprocess.CompletedProcess:
    """``fewstep ARGS`` in a subprocess (or ``exe ARGS``), text output captured."""
    cmd = (exe or [FEWSTEP]) + [str(a) for a in args]
    return subprocess.run(cmd, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture) -> Callable[..., tuple[int, str, str]]:
    """``fewstep ARGS`` in this process: returns (exit code, stdout, stderr). An exception other than
    SystemExit escaping ``main`` is what a user would see as a traceback, so it fails the test."""
    from fewstep.cli.main import main

    def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return call


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file and folder under ``root`` with its bytes and mtime (ns), to prove that a refused
    command touched nothing (a folder's mtime changes when an entry is added or removed)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>", p.stat().st_mtime_ns)
        for p in sorted([root, *root.rglob("*")])
    }


@pytest.fixture(scope="session")
def moons_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 30-iteration moons teacher trained by ``fewstep train`` in a subprocess (shared, read-only)."""
    root = tmp_path_factory.mktemp("moons_run")
    proc = run_fewstep("train", "--out", root / "run", *TINY_MOONS, cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "run"


class Spy:
    """Wraps a denoiser; records every call: input, time, grad mode, global RNG state, x̂."""

    def __init__(self, denoiser) -> None:
        self.denoiser, self.schedule = denoiser, denoiser.schedule
        self.calls: list[dict] = []

    def __call__(self, z_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Prediction:
        rng = torch.get_rng_state()
        out = self.denoiser(z_t, t, cond)
        self.calls.append({"z": z_t.detach().clone(), "t": batch_times(t, z_t).clone(), "grad": torch.is_grad_enabled(),
                           "rng": rng, "x_hat": out.x_hat.detach().clone()})
        return out

    def online(self) -> dict:
        (call,) = [c for c in self.calls if c["grad"]]
        return call

    def references(self) -> list[dict]:
        return [c for c in self.calls if not c["grad"]]

    def reference(self) -> dict:
        (call,) = self.references()
        return call


def mlp_denoiser(dim: int = 3, dropout: float = 0.0, seed: int = 0):
    """A small random MLP denoiser (cosine schedule, v-prediction), seeded."""
    from fewstep.models import MLP
    from fewstep.param import Denoiser

    torch.manual_seed(seed)
    return Denoiser(MLP(dim, width=32, depth=2, dropout=dropout), CosineSchedule())
