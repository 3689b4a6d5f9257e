"""``train(config, workdir)``: compose a run (data, denoiser, objective, teacher, card) and hand it to
the generic loop; ``ensure_trained`` reuses, resumes or trains."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from ..batch import Batch, BatchSource, RandomBatches
from ..data import Dataset, LazyExamples, load_dataset
from ..data.stream import StreamBatches
from ..errors import UserError
from ..param import Denoiser, DenoiserLike
from ..sampling import generate
from ..train import dist
from ..train.checkpoint import remove_run
from ..train.loop import LoopSettings, fit
from .build import (BACKBONES, build_backbone, build_denoiser, check_rebuilds, data_cond, describe_class, layout_difference,
                    evaluation_conditions, recipe_of, resolve_cond)
from .card import BackboneRecipe, RunCard
from .config import ModelConfig, TrainConfig, same_settings
from .folder import check_resumable, load_weights, read_run
from .objective import make_objective


def train(
    config: TrainConfig,
    workdir: Path | str,
    *,
    dataset: Dataset | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    student: Denoiser | None = None,
    teacher: DenoiserLike | None = None,
) -> Path:
    """Train ``config`` into the run folder ``workdir`` and return it.

    ``dataset`` saves loading ``config.data`` again; ``resume`` continues the run in ``workdir`` (only
    ``config.iters`` may differ from its own; a run with no checkpoint yet starts from step 0);
    ``stop_after`` bounds the steps of this call (then checkpoints). ``student`` replaces the backbone built from ``config.model`` with any ``nn.Module`` in
    a :class:`Denoiser` (its schedule and prediction type are recorded in the run); ``teacher`` replaces
    ``config.teacher`` with any denoiser. Before the first step, the recipe that rebuilds a user's
    backbone (:func:`fewstep.runs.backbone`, or a module's ``init_kwargs``) is checked against the module;
    a class fewstep cannot rebuild is recorded by name, and the run reopens with ``load(run, backbone=…)``.
    """
    workdir = Path(workdir)
    device = dist.resolve_device(config.device)
    dist.init(device)
    dataset = dataset or load_dataset(config.data, config.data_loader)
    config = resolve_cond(config, dataset)
    ckpt = None
    if resume and not (workdir / "checkpoint.json").is_file():
        resume = False  # killed before its first checkpoint: start again from step 0, without its partial log
        remove_run(workdir)
    if resume:
        saved, _, ckpt = read_run(workdir, arg="resume", with_optimizer=True)
        config = dataclasses.replace(saved, iters=config.iters)
    recipe = None
    if student is not None:
        config, recipe = describe_student(config, student, dataset)

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    denoiser = (student or build_denoiser(config, dataset.shape, dataset.num_classes)).to(device)
    if ckpt is not None:
        check_resumable(ckpt, denoiser.backbone)
    composed = make_objective(config, dataset, device, denoiser, teacher=teacher)
    if ckpt is None and composed.teacher.weights is not None:
        load_weights(denoiser.backbone, with_own_guidance_embedding(denoiser.backbone, composed.teacher.weights),
                     "the teacher's weights", arg="init")
    card = RunCard(dataset.name, dataset.shape, dataset.normaliser, dataset.num_classes, config.objective,
                   backbone=recipe, class_names=dataset.class_names, **composed.card)
    settings = LoopSettings(
        iters=config.iters, lr=config.lr, warmup=config.warmup, weight_decay=config.weight_decay, grad_clip=config.grad_clip,
        ema_halflife=config.ema_halflife_frac * config.iters, seed=config.seed, log_every=config.log_every,
        ckpt_every=config.ckpt_every, eval_every=config.eval_every, max_bad_steps=config.max_bad_steps,
        label=f"train {config.objective}",
    )
    evaluate = lambda ema: quick_eval(ema, dataset, config.eval_samples, composed.objective.sampler, config)  # noqa: E731
    if isinstance(dataset.train, LazyExamples):  # streamed from disk, from the step this call starts at
        batches: BatchSource = StreamBatches(dataset.train, config.batch, seed=config.seed, start=ckpt.step if ckpt else 0,
                                             workers=config.workers, rank=dist.rank(), world=dist.world_size(), device=device,
                                             cond=data_cond(config, dataset))
    else:
        batches = RandomBatches(Batch(dataset.train, data_cond(config, dataset)), config.batch, device)
    fit(denoiser, composed.objective, batches, workdir, settings,
        device=device, config=config.to_dict(), card=card.to_dict(), heldout=Batch(dataset.heldout, data_cond(config, dataset, heldout=True)),
        resume=ckpt, evaluate=evaluate, stop_after=stop_after, progress=progress)
    return workdir


def with_own_guidance_embedding(student: torch.nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The teacher's weights plus the student's own (zero-output) embedding of w where the teacher has none:
    a w-conditioned student starts as its teacher (docs/math.md §10)."""
    own = {k: v for k, v in student.state_dict().items() if ".guidance_mlp." in f".{k}" and k not in weights}
    return {**weights, **own}


def describe_student(config: TrainConfig, student: Denoiser, dataset: Dataset) -> tuple[TrainConfig, BackboneRecipe | None]:
    """The config as the given ``student`` really is (its schedule, prediction type, precision, backbone)
    and the recipe that rebuilds its backbone; checked here, before any training step."""
    config = dataclasses.replace(config, schedule=student.schedule.to_dict(), prediction=student.prediction,
                                 precision=student.precision)
    module = student.backbone
    if config.model.name in BACKBONES and _built_by(config, module, dataset):
        return config, None  # our own MLP/UNet as the config describes it
    found = recipe_of(module)
    if found is None:  # reopens only with fewstep.load(run, backbone=instance)
        return dataclasses.replace(config, model=ModelConfig(name=describe_class(module))), BackboneRecipe(describe_class(module), None)
    path, kwargs = found
    config = dataclasses.replace(config, model=ModelConfig(name=path, kwargs=kwargs))
    check_rebuilds(module, build_backbone(config, dataset.shape, dataset.num_classes), f"{path}(**{kwargs})")
    return config, BackboneRecipe(path, kwargs)


def _built_by(config: TrainConfig, module: torch.nn.Module, dataset: Dataset) -> bool:
    """Whether ``config.model`` builds a module of ``module``'s class and layout for this data."""
    try:
        built = build_backbone(config, dataset.shape, dataset.num_classes)
    except UserError:  # e.g. a unet config on points: the given module is something else
        return False
    return type(built) is type(module) and not layout_difference(built.state_dict(), module.state_dict())


@torch.no_grad()
def quick_eval(denoiser: Denoiser, dataset: Dataset, n: int, sampler: Any, config: TrainConfig | None = None) -> dict[str, Any] | None:
    """A few-thousand-sample check of the EMA model with its own sampler, on the held-out split; a
    class-conditional model samples every class in turn, a caption-conditional one the held-out captions
    in turn (unguided), adding the class accuracy and the prompt fidelity. Under torchrun each rank draws
    its share (seed = rank) and the main rank scores them all; None elsewhere."""
    from ..metrics import evaluate_samples

    denoiser.eval()
    count = dist.shard(n)
    device = next(denoiser.parameters()).device
    rows = dist.shard_rows(n)  # this rank's sample indices
    labels, prompts, cond = evaluation_conditions(config, dataset, rows)
    mine = generate(denoiser, count, dataset.shape, sampler, seed=dist.rank(), device=device, cond=cond) if count else torch.empty(0, *dataset.shape)
    samples = dist.gather_to_main(mine.cpu())
    if samples is None:
        return None
    finite = samples.flatten(1).isfinite().all(1)
    if not bool(finite.all()):  # a diverged model: say so in the log instead of failing the run at its end
        return {"sampler": sampler.name, "steps": sampler.steps, "nonfinite_fraction": float(1 - finite.float().mean())}
    every = torch.arange(n)
    labels, prompts, _ = evaluation_conditions(config, dataset, every)  # the same conditions, in the gathered order
    return {"sampler": sampler.name, "steps": sampler.steps, **evaluate_samples(dataset, samples, labels=labels, prompts=prompts)}


def ensure_trained(
    config: TrainConfig, workdir: Path | str, *, dataset: Dataset | None = None, overwrite: bool = False,
    arg: str = "out",
) -> tuple[str, float]:
    """Reuse a finished run of ``config`` in ``workdir``, resume an interrupted one, or train it.

    Returns ("reused" | "resumed" | "trained", seconds spent). A run there with other settings is
    replaced only when ``overwrite`` (the device a run was trained on does not count as a setting).
    """
    workdir = Path(workdir)
    resume = False
    if (workdir / "checkpoint.json").is_file():
        saved, _, ckpt = read_run(workdir, arg=arg)
        same = same_settings(saved, config)
        if same and ckpt.step >= config.iters:
            return "reused", 0.0
        if not same and not overwrite:
            raise UserError(f"{workdir} holds a run with other settings; retrain it with overwrite (--overwrite)", arg=arg)
        resume = same
        if not same:
            remove_run(workdir)
    tick = time.perf_counter()
    train(config, workdir, dataset=dataset, resume=resume)
    return ("resumed" if resume else "trained"), time.perf_counter() - tick
