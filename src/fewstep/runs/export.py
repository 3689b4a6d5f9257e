"""``export(run, out)``: a student run as a folder that stock diffusers loads and samples without fewstep
(docs/math.md §12).

    out/unet/             the student's UNet2DModel: config.json and its EMA weights (safetensors)
    out/scheduler/        DDIMScheduler with the run's betas and prediction type, trailing timesteps
    out/model_index.json  DDIMPipeline (unconditional) or pipeline.FewstepClassPipeline (class labels)
    out/pipeline.py       the latter's code (export_pipeline.py), for a class-conditional student
    out/fewstep.json      S, the grid (timesteps and t), w, the null class, the class map
    out/README.md         the model card: how to sample, the protocol, the measured quality

Only what DDIMScheduler (eta = 0) samples exactly is exported: a multistep consistency student (cd, ct,
mect) with the diffusers-unet backbone whose S divides its table's T. Anything else is refused in one line,
before anything is written.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..io import atomic_folder, check_folder_path
from ..schedules import TabulatedSchedule, schedule_from_dict
from .card import RunCard
from .config import TrainConfig
from .diffusers_teacher import BETA_SCHEDULES, PREDICTIONS
from .diffusers_unet import diffusers
from .folder import open_denoiser, read_run

DIFFUSERS_PREDICTION = {ours: theirs for theirs, ours in PREDICTIONS.items()}   # v → v_prediction, …
PIPELINE = ("pipeline", "FewstepClassPipeline")                              # pipeline.py, its class
MARKER = "fewstep.json"                                                      # what makes a folder an export


def check_exportable(config: TrainConfig, card: RunCard) -> tuple[int, TabulatedSchedule]:
    """(S, the run's table) of a run that exports exactly; a one-line error saying why not otherwise."""
    if card.sampler.name != "consistency":
        if not card.is_student:
            raise UserError("a diffusion teacher; export writes few-step students (cd, ct, mect), whose S steps "
                            "DDIMScheduler takes exactly: distil one first", arg="run")
        raise UserError(f"a {config.objective} student samples with its {card.sampler.name} sampler, which re-noises between "
                        "its steps: DDIMScheduler with eta = 0 is not that sampler (export cd, ct or mect students)", arg="run")
    if config.guidance_range is not None:
        raise UserError("a w-conditioned student takes w through fewstep's embedding of w, and a UNet2DModel has no input "
                        "for it (its class embedding holds the labels): sample it with fewstep, or distil one student "
                        "per w (guidance W), which exports", arg="run")
    if config.cond == "text":
        raise UserError("a caption-conditioned student samples from its text encoder's token states, which no stock "
                        "diffusers pipeline computes without fewstep (fewstep's encoders are not diffusers components): "
                        "sample it with fewstep (fewstep sample --prompt)", arg="run")
    name = config.model.name
    if name != "diffusers-unet":
        what = f"fewstep's own {name}" if name in ("mlp", "unet") else f"the user class {name}"
        raise UserError(f"this run's backbone is {what}, not a UNet2DModel, and its weights do not map onto one (another "
                        "architecture); train the teacher, or distil the student, with the diffusers-unet backbone "
                        "(the default for a diffusers:PATH teacher's student)", arg="run")
    schedule = schedule_from_dict(config.schedule)
    if not isinstance(schedule, TabulatedSchedule):  # a hand-edited config: diffusers-unet trains on nothing else
        raise UserError("this run's config.json gives its diffusers-unet no tabulated schedule", arg="run")
    steps, table = int(card.sampler.steps or config.student_steps), schedule.steps
    if table % steps:
        divisors = ", ".join(str(d) for d in range(1, table + 1) if table % d == 0)
        raise UserError(f"S = {steps} does not divide T = {table}: DDIMScheduler's trailing timesteps would not be the "
                        f"student's grid t = 1 − k/S (docs/math.md §12); export students whose S divides T: {divisors}", arg="run")
    return steps, schedule


def scheduler_config(schedule: TabulatedSchedule, prediction: str) -> dict[str, Any]:
    """DDIMScheduler's arguments for the student's sampler (docs/math.md §12): the run's betas (by name when
    diffusers' named schedule gives exactly them), its prediction type, trailing timesteps, ᾱ = 1 after the
    last step (which then returns x̂), and no clipping, since the student's own sampler clips nothing (a clipped
    ε teacher's student predicts v, whose x̂ = α z − σ v̂ does not divide by α)."""
    d, steps = diffusers("run"), schedule.steps
    betas = schedule.betas.float()
    named = next((name for name in BETA_SCHEDULES
                  if torch.equal(d.DDIMScheduler(num_train_timesteps=steps, beta_schedule=name).betas, betas)), None)
    return {"num_train_timesteps": steps, **({"beta_schedule": named} if named else {"trained_betas": betas.tolist()}),
            "prediction_type": DIFFUSERS_PREDICTION[prediction], "timestep_spacing": "trailing", "set_alpha_to_one": True,
            "clip_sample": False, "thresholding": False, "steps_offset": 0}


def grid(steps: int, table: int) -> dict[str, list[Any]]:
    """The student's times t = 1 − k/S and DDIMScheduler's trailing timesteps T − 1 − kT/S for them."""
    return {"timesteps": [table - 1 - k * table // steps for k in range(steps)], "t": [1 - k / steps for k in range(steps)]}


def check_out(out: Path, overwrite: bool) -> Path:
    """``out`` if an export may be written there: a new or empty folder, or with ``overwrite`` an earlier
    export (a folder with fewstep.json), never anything else."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; expected a folder path", arg="out")
    check_folder_path(out.parent, "out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out} already exists and is not empty; pass overwrite (--overwrite) to replace an earlier export", arg="out")
        if not (out / MARKER).is_file():
            raise UserError(f"{out} holds something other than a fewstep export (no {MARKER}); refusing to replace it", arg="out")
    return out


def export(run: Path | str, out: Path | str, *, overwrite: bool = False) -> Path:
    """Write the student run ``run`` into the folder ``out`` (see the module docstring) and return it."""
    out = check_out(Path(out), overwrite)
    config, card, _ = read_run(run, arg="run")
    steps, schedule = check_exportable(config, card)
    _, _, ckpt, denoiser = open_denoiser(run, arg="run")
    d = diffusers("run")
    unet = denoiser.backbone.unet
    scheduler = d.DDIMScheduler(**scheduler_config(schedule, config.prediction))
    conditional = config.cond == "class"
    index = denoiser.backbone.class_index
    null = int(index[-1]) if denoiser.backbone.has_null else None
    info = {
        "format": 1, "student_steps": steps, "num_train_timesteps": schedule.steps, **grid(steps, schedule.steps),
        "prediction_type": DIFFUSERS_PREDICTION[config.prediction], "guidance": config.guidance,
        "num_classes": card.num_classes if conditional else None, "null_class": null,
        "class_index": index[: card.num_classes].tolist() if conditional else None,
        "class_names": list(card.class_names) if conditional and card.class_names else None,
        "pipeline": ".".join(PIPELINE) if conditional else "DDIMPipeline",
        "run": {"objective": config.objective, "teacher": card.teacher, "teacher_clip": card.teacher_clip, "data": card.data,
                "data_shape": list(card.data_shape), "step": ckpt.step},
    }
    index_json = {"_class_name": list(PIPELINE) if conditional else "DDIMPipeline", "_diffusers_version": d.__version__,
                  **({"student_steps": steps} if conditional else {}),
                  "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DModel"]}

    def write(folder: Path) -> None:
        unet.save_pretrained(folder / "unet", safe_serialization=True)
        scheduler.save_pretrained(folder / "scheduler")
        (folder / "model_index.json").write_text(json.dumps(index_json, indent=2) + "\n")
        if conditional:
            (folder / "pipeline.py").write_text(Path(__file__).with_name("export_pipeline.py").read_text())
        (folder / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        (folder / "README.md").write_text(model_card(config, card, info, ckpt.step))

    atomic_folder(out, write)
    return out


def model_card(config: TrainConfig, card: RunCard, info: dict[str, Any], step: int) -> str:
    """README.md of an export: how to sample it with diffusers alone, how it was made, what was measured."""
    steps, conditional = info["student_steps"], info["pipeline"] != "DDIMPipeline"
    if conditional:
        usage = ("from diffusers import DiffusionPipeline\n\n"
                 "pipe = DiffusionPipeline.from_pretrained(FOLDER, trust_remote_code=True)  # runs pipeline.py\n"
                 f"images = pipe(class_labels=[0, 1, 2, 3], output_type=\"np\").images       # {steps} steps by default")
        labels = ("Labels are the UNet's class indices; `class_index` in fewstep.json maps the data's classes 0…K−1 onto "
                  f"them{' (`class_names` names them)' if info['class_names'] else ''}.")
    else:
        usage = ("from diffusers import DDIMPipeline\n\n"
                 "pipe = DDIMPipeline.from_pretrained(FOLDER)\n"
                 f"images = pipe(batch_size=16, num_inference_steps={steps}, output_type=\"np\").images")
        labels = ""
    guidance = f" of its teacher guided at w = {config.guidance:g} (it samples without guidance)" if config.guidance is not None else ""
    n = card.n_schedule
    protocol = {
        "objective": config.objective, "teacher": card.teacher, "data": f"{card.data}, examples of shape {list(card.data_shape)}",
        "student steps S": steps, "iterations": f"{step} (batch {config.batch}, learning rate {config.lr:g}, seed {config.seed})",
        "teacher discretisation N": n and (n["n0"] if n["n0"] == n["n1"] else f"{n['n0']} → {n['n1']} over {n['anneal_frac']:.0%} of the run"),
        "initialised from": "the teacher's weights" if config.init == "teacher" else "scratch",
        "teacher's x̂": "clipped to [−1, 1] in the distillation targets" if card.teacher_clip else None,
        "schedule": f"{info['num_train_timesteps']}-step table, prediction_type {info['prediction_type']}",
    }
    measured = card.final_eval or {}
    scores = [f"| {k} | {v:.4g} |" for k, v in measured.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "steps"]
    quality = ("fewstep's evaluation at the end of training, with the student's own sampler against the held-out split "
               "(FD-classifier is the Fréchet distance in a small classifier's features, not FID):\n\n"
               "| metric | value |\n|---|---:|\n" + "\n".join(scores)) if scores else "Not measured."
    lines = [
        "---", "library_name: diffusers",
        f"tags: [fewstep, multistep-consistency, {'class-conditional' if conditional else 'unconditional'}-image-generation]", "---", "",
        f"# A {steps}-step multistep consistency student{guidance}", "",
        f"Written by `fewstep export`: a {config.objective} student " + (f"of `{card.teacher}`" if card.teacher else "without a teacher")
        + f" on `{card.data}`. It samples with diffusers alone:", "",
        "```python", usage, "```", "",
        f"Use exactly {steps} steps: DDIMScheduler with eta = 0 and trailing timesteps {info['timesteps']} (t = 1 − k/S) "
        "is then the student's own sampler, and its last step returns the model's x̂; other step counts are off the grid "
        "it was trained on. " + labels, "",
        "## Protocol", "", *(f"- {k}: {v}" for k, v in protocol.items() if v is not None), "",
        "## Measured quality", "", quality, "",
    ]
    return "\n".join(lines)
