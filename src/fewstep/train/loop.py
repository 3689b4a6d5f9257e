"""The generic training loop: AdamW, warm-up, clipping, EMA, JSONL log, checkpoints, exact resume, DDP.

It knows nothing about diffusion: the objective (see :mod:`fewstep.objectives`) turns a batch into a
loss. Resuming restores weights, EMA, optimiser, step and every RNG, so a resumed run equals an
uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..build import build_denoiser
from ..config import TrainConfig
from ..data import Dataset, load_dataset
from ..param import Denoiser
from . import dist
from .checkpoint import Checkpoint, decode_rng, encode_rng, load_checkpoint, save_checkpoint
from .ema import EMA
from .log import JsonlLog

BANDS = 4  # the loss is logged per band of t: [0, .25), [.25, .5), [.5, .75), [.75, 1]

# (config, dataset, device) -> objective; and an optional hook run once at the end of training
# that returns extras to store with the checkpoint (e.g. the aDDIM variance table of a teacher).
ObjectiveFactory = Callable[[TrainConfig, Dataset, torch.device], Any]


def lr_at(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then constant (so extending a run with --resume --iters keeps its schedule)."""
    return config.lr * min(1.0, (step + 1) / max(1, config.warmup))


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


def train(
    config: TrainConfig,
    workdir: Path | str,
    *,
    dataset: Dataset | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    student: Denoiser | None = None,
    teacher: Any = None,
) -> Path:
    """Train ``config`` into ``workdir``; ``stop_after`` steps of this call at most (then checkpoint).

    ``student`` replaces the backbone built from ``config.model`` (any ``nn.Module`` in a
    :class:`Denoiser`, with its own schedule and parameterisation); ``teacher`` replaces
    ``config.teacher`` with any denoiser. Both are for the Python API; the CLI builds its own.
    """
    from ..objectives import make_objective  # objectives import the loop's types; avoid a cycle

    workdir = Path(workdir)
    device = dist.resolve_device(config.device)
    dist.init(device)
    dataset = dataset or load_dataset(config.data)
    start = 0
    ckpt = load_checkpoint(workdir, flag="--resume", with_optimizer=True) if resume else None
    if ckpt is not None:
        config = dataclasses.replace(ckpt.config, iters=config.iters)
        start = ckpt.step

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    denoiser = (student or build_denoiser(config, dataset.shape)).to(device)
    objective = make_objective(config, dataset, device, teacher=teacher)
    if ckpt is None and getattr(objective, "init_weights", None) is not None:
        denoiser.backbone.load_state_dict(objective.init_weights)
    ema = EMA(denoiser.backbone, config.ema_halflife_frac * config.iters)
    opt = torch.optim.AdamW(denoiser.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(config.seed * 1000 + 1 + dist.rank())
    torch.manual_seed(config.seed * 1000 + 2 + dist.rank())  # dropout masks differ per rank
    extra: dict[str, Any] = {
        "data": dataset.name, "data_shape": list(dataset.shape), "normaliser": dataset.normaliser.to_dict(),
        "num_classes": dataset.num_classes, **getattr(objective, "meta", {}),
    }
    if ckpt is not None:
        denoiser.backbone.load_state_dict(ckpt.model)
        ema.model.load_state_dict(ckpt.ema)
        opt.load_state_dict(ckpt.optimizer)
        _restore_rng(ckpt.rng, generator)
        extra.update(ckpt.extra)

    raw_backbone = denoiser.backbone
    if dist.is_distributed():
        denoiser.backbone = DistributedDataParallel(raw_backbone, device_ids=[device.index] if device.type == "cuda" else None)

    if dist.is_main():
        workdir.mkdir(parents=True, exist_ok=True)
    log = JsonlLog(workdir / "log.jsonl", enabled=dist.is_main())
    if ckpt is not None:
        log.truncate_after(start)
    else:
        log.write(step=0, event="start", config=config.to_dict(), world_size=dist.world_size(), device=str(device))
    end = config.iters if stop_after is None else min(config.iters, start + stop_after)
    train_x = dataset.train.to(device)

    window: dict[str, list[float]] = defaultdict(list, ckpt.extra.get("log_window", {}) if ckpt else {})

    def checkpoint(step: int) -> None:
        # The partial log window travels with the checkpoint, so a resumed run logs what an
        # uninterrupted one would have.
        extra["log_window"] = {k: list(v) for k, v in window.items()}
        if hasattr(objective, "state"):
            extra["objective_state"] = objective.state()
        if dist.is_main():
            save_checkpoint(workdir, Checkpoint(config, step, raw_backbone.state_dict(), ema.model.state_dict(), opt.state_dict(), _rng_state(generator), extra))
        dist.barrier()

    tick = time.perf_counter()
    bar = tqdm(range(start, end), initial=start, total=config.iters, disable=not (progress and dist.is_main()), desc=f"train {config.objective}", dynamic_ncols=True)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(config, step)
        idx = torch.randint(len(train_x), (config.batch,), generator=generator).to(device)
        denoiser.train()
        out = objective(denoiser, train_x[idx], None, step, generator)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(denoiser.parameters(), config.grad_clip)
        opt.step()
        ema.update(raw_backbone)

        window["loss"].append(out.loss.item())
        window["grad_norm"].append(grad_norm.item())
        for k, v in out.scalars.items():
            window[k].append(v)
        _band_losses(out.per_example, out.t, window)
        done = step + 1
        if done % config.log_every == 0 or done == config.iters:
            elapsed = time.perf_counter() - tick
            record = {k: dist.mean_scalar(sum(v) / len(v), device) for k, v in window.items()}
            record["it_per_s"] = len(window["loss"]) / max(elapsed, 1e-9)
            log.write(step=done, lr=lr_at(config, step), **record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            window.clear()
            tick = time.perf_counter()
        if config.eval_every and done % config.eval_every == 0 and done < config.iters and dist.is_main():
            log.write(step=done, eval=quick_eval(ema_denoiser(denoiser, ema), dataset, config, objective))
        if done % config.ckpt_every == 0 and done < end:
            checkpoint(done)
    bar.close()

    if end == config.iters and dist.is_main():
        final_ema = ema_denoiser(denoiser, ema)
        if hasattr(objective, "finalize"):
            extra.update(objective.finalize(final_ema, dataset))
        metrics = quick_eval(final_ema, dataset, config, objective)
        extra["final_eval"] = metrics
        log.write(step=end, eval=metrics, event="end")
    checkpoint(end)
    denoiser.backbone = raw_backbone
    return workdir


@torch.no_grad()
def quick_eval(denoiser: Denoiser, dataset: Dataset, config: TrainConfig, objective: Any) -> dict[str, Any]:
    """A few-thousand-sample check of the EMA model with its own sampler, on the held-out split."""
    from ..metrics import evaluate_samples
    from ..sampling import generate

    denoiser.eval()
    sampler, steps = getattr(objective, "eval_sampler", ("ddim", config.eval_steps))
    options = getattr(objective, "eval_options", {})  # e.g. ECT's u_mid
    samples = generate(denoiser, config.eval_samples, dataset.shape, sampler=sampler, steps=steps, seed=0,
                       device=next(denoiser.parameters()).device, **options)
    metrics = evaluate_samples(dataset, samples.cpu())
    return {"sampler": sampler, "steps": steps, **metrics}


def ensure_trained(
    config: TrainConfig, workdir: Path | str, *, dataset: Dataset | None = None, overwrite: bool = False,
    flag: str = "--out",
) -> tuple[str, float]:
    """Reuse a finished run of ``config`` in ``workdir``, resume an interrupted one, or train it.

    Returns ("reused" | "resumed" | "trained", seconds spent). A run there with other settings is
    replaced only when ``overwrite`` (the device a run was trained on does not count as a setting).
    """
    from .checkpoint import remove_run
    from ..errors import UserError

    workdir = Path(workdir)
    resume = False
    if (workdir / "checkpoint.json").is_file():
        ckpt = load_checkpoint(workdir, flag=flag)
        same = dataclasses.replace(ckpt.config, device=config.device) == config
        if same and ckpt.step >= config.iters:
            return "reused", 0.0
        if not same and not overwrite:
            raise UserError(f"{flag}: {workdir} holds a run with other settings; pass --overwrite to retrain it")
        resume = same
        if not same:
            remove_run(workdir)
    tick = time.perf_counter()
    train(config, workdir, dataset=dataset, resume=resume)
    return ("resumed" if resume else "trained"), time.perf_counter() - tick
