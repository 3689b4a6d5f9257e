"""The generic training loop: AdamW, warm-up, clipping, EMA, JSONL log, checkpoints, exact resume, DDP.

It knows nothing about diffusion, configs or data sets: it takes a denoiser, an objective (the contract
of :mod:`fewstep.objectives.common`) and a source of batches. Resuming restores weights, EMA,
optimiser, step and every RNG, so a resumed run equals an uninterrupted one. What to train is composed
in :func:`fewstep.runs.train`.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..batch import Batch, BatchSource
from ..errors import UserError
from ..objectives.common import Objective
from ..param import Denoiser
from . import dist
from .checkpoint import Checkpoint, decode_rng, encode_rng, save_checkpoint
from .ema import EMA
from .log import JsonlLog

BANDS = 4  # the loss is logged per band of t: [0, .25), [.25, .5), [.5, .75), [.75, 1]


@dataclass(frozen=True)
class LoopSettings:
    iters: int
    lr: float
    warmup: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_halflife: float = 0.0   # steps
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 1000
    eval_every: int = 0         # 0: only at the end
    max_bad_steps: int = 0      # steps with a non-finite loss or gradient skipped before the run stops
    label: str = "train"        # the progress bar's


SPIKE = 10.0          # a gradient norm this many times its running mean is logged as a spike
SPIKE_WARMUP = 20     # steps before spikes are looked for


class NonFiniteStep(UserError):
    """A step's loss or gradient norm was NaN or inf more often than allowed; the run stopped before
    writing anything, so the last checkpoint on disk is the last good state."""


def lr_at(settings: LoopSettings, step: int) -> float:
    """Linear warm-up, then constant (so extending a run with --resume --iters keeps its schedule)."""
    return settings.lr * min(1.0, (step + 1) / max(1, settings.warmup))


def _band_losses(per_example: torch.Tensor, t: torch.Tensor, sums: dict[str, list[float]]) -> None:
    bands = (t.detach().cpu() * BANDS).long().clamp(0, BANDS - 1)
    for b in range(BANDS):
        mask = bands == b
        if mask.any():
            sums[f"loss_t{b}"].append(per_example.detach().cpu()[mask].mean().item())


def _rng_state(generator: torch.Generator) -> dict[str, str]:
    state = {"data": encode_rng(generator.get_state()), "torch": encode_rng(torch.get_rng_state())}
    if torch.cuda.is_available():
        state["cuda"] = encode_rng(torch.cuda.get_rng_state())
    return state


def _restore_rng(state: dict[str, str], generator: torch.Generator) -> None:
    generator.set_state(decode_rng(state["data"]))
    torch.set_rng_state(decode_rng(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(decode_rng(state["cuda"]))


def ema_denoiser(online: Denoiser, ema: EMA) -> Denoiser:
    return Denoiser(ema.model, online.schedule, online.prediction, online.precision)  # type: ignore[arg-type]


def fit(
    denoiser: Denoiser,
    objective: Objective,
    batches: BatchSource,
    workdir: Path,
    settings: LoopSettings,
    *,
    device: torch.device,
    config: dict[str, Any],
    card: dict[str, Any],
    heldout: Batch | None = None,
    resume: Checkpoint | None = None,
    evaluate: Callable[[Denoiser], dict[str, Any]] | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``denoiser`` on ``objective`` into ``workdir``; ``stop_after`` steps of this call at most (then
    checkpoint). ``config`` and ``card`` are stored with each checkpoint as they are, plus the log window,
    the objective's state, and at the end what ``objective.finalize`` measures on ``heldout`` and what
    ``evaluate`` returns (called on every rank; the main rank's result is kept, the others return None).
    A step whose loss or gradient norm is not finite changes no weight; after ``settings.max_bad_steps``
    of them the run stops with :class:`NonFiniteStep`. Returns the final card."""
    start = 0 if resume is None else resume.step
    ema = EMA(denoiser.backbone, settings.ema_halflife)
    opt = torch.optim.AdamW(denoiser.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(settings.seed * 1000 + 1 + dist.rank())
    torch.manual_seed(settings.seed * 1000 + 2 + dist.rank())  # dropout masks differ per rank
    card = dict(card)
    if resume is not None:
        denoiser.backbone.load_state_dict(resume.model)
        ema.model.load_state_dict(resume.ema)
        opt.load_state_dict(resume.optimizer)
        _restore_rng(resume.rng, generator)
        card.update(resume.extra)

    raw_backbone = denoiser.backbone
    if dist.is_distributed():
        denoiser.backbone = DistributedDataParallel(raw_backbone, device_ids=[device.index] if device.type == "cuda" else None)

    if dist.is_main():
        workdir.mkdir(parents=True, exist_ok=True)
    log = JsonlLog(workdir / "log.jsonl", enabled=dist.is_main())
    if resume is not None:
        log.truncate_after(start)
    else:
        log.write(step=0, event="start", config=config, world_size=dist.world_size(), device=str(device),
                  threads=torch.get_num_threads())
    end = settings.iters if stop_after is None else min(settings.iters, start + stop_after)
    window: dict[str, list[float]] = defaultdict(list, resume.extra.get("log_window", {}) if resume else {})

    def checkpoint(step: int) -> None:
        # The partial log window travels with the checkpoint, so a resumed run logs what an
        # uninterrupted one would have.
        card["log_window"] = {k: list(v) for k, v in window.items()}
        card["objective_state"] = objective.state()
        if dist.is_main():
            save_checkpoint(workdir, Checkpoint(config, step, raw_backbone.state_dict(), ema.model.state_dict(), opt.state_dict(), _rng_state(generator), card))
        dist.barrier()

    tick = time.perf_counter()
    state = card.setdefault("loop", {})  # the loop's own counters, restored on resume with the card
    bad, grad_mean = int(state.get("bad_steps", 0)), state.get("grad_norm_mean")
    bar = tqdm(range(start, end), initial=start, total=settings.iters, disable=not (progress and dist.is_main()), desc=settings.label, dynamic_ncols=True)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(settings, step)
        batch = batches.sample(generator)
        denoiser.train()
        out = objective(denoiser, batch.x, batch.cond, step, generator)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(denoiser.parameters(), settings.grad_clip)
        loss, norm = out.loss.item(), grad_norm.item()
        done = step + 1
        if not (math.isfinite(loss) and math.isfinite(norm)):
            # Under DDP the gradient is all-reduced, so every rank sees the same non-finite norm.
            bad += 1
            state["bad_steps"] = bad
            log.write(step=done, event="nonfinite", loss=str(loss), grad_norm=str(norm), skipped=bad)
            if bad > settings.max_bad_steps:
                raise NonFiniteStep(f"step {done}: the loss is {loss} and the gradient norm {norm}; the run stopped and "
                                    f"its last checkpoint ({workdir}) is kept (allow max_bad_steps={settings.max_bad_steps} "
                                    "skips with --skip-nonfinite, or lower the learning rate)")
            opt.zero_grad(set_to_none=True)
        else:
            opt.step()
            ema.update(raw_backbone)
            if grad_mean is not None and done - start > SPIKE_WARMUP and norm > SPIKE * grad_mean:
                log.write(step=done, event="grad_spike", grad_norm=norm, running_mean=grad_mean)
            grad_mean = norm if grad_mean is None else 0.9 * grad_mean + 0.1 * norm
            state["grad_norm_mean"] = grad_mean
            window["loss"].append(loss)
            window["grad_norm"].append(norm)
            for k, v in out.scalars.items():
                window[k].append(v)
            _band_losses(out.per_example, out.t, window)
        if (done % settings.log_every == 0 or done == settings.iters) and window["loss"]:
            elapsed = time.perf_counter() - tick
            record = {k: dist.mean_scalar(sum(v) / len(v), device) for k, v in window.items()}
            record["it_per_s"] = len(window["loss"]) / max(elapsed, 1e-9)
            log.write(step=done, lr=lr_at(settings, step), **record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            window.clear()
            tick = time.perf_counter()
        if evaluate and settings.eval_every and done % settings.eval_every == 0 and done < settings.iters:
            metrics = evaluate(ema_denoiser(denoiser, ema))  # every rank samples its share
            if metrics is not None:
                log.write(step=done, eval=metrics)
        if done % settings.ckpt_every == 0 and done < end:
            checkpoint(done)
    bar.close()

    if end == settings.iters:
        final_ema = ema_denoiser(denoiser, ema)
        if heldout is not None and dist.is_main():
            card.update(objective.finalize(final_ema, heldout))
        metrics = evaluate(final_ema) if evaluate is not None else None  # every rank samples its share
        if metrics is not None:
            card["final_eval"] = metrics
        log.write(step=end, **({"eval": metrics} if metrics is not None else {}), event="end")
    checkpoint(end)
    denoiser.backbone = raw_backbone
    return card
