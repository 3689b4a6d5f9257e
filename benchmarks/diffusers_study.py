"""Issue 10's measured study: two diffusers teachers trained with diffusers' own recipe on digits, their
few-step students distilled and exported through the CLI and sampled in stock diffusers, against the
training-free samplers a diffusers user already has. Cached and resumable: run it again after a kill.

    python benchmarks/diffusers_study.py --runs DIR [--iters 4000] [--student-iters N] [--samples 2000]
                                         [--seeds 0 1 2] [--stages teachers students export samples report]

Everything lives under ``DIR/diffusers/NAME`` for NAME in eps-linear, v-cosine; results go to
``RESULTS/diffusers_study.json`` and ``RESULTS/diffusers_study.md`` (benchmarks/diffusers_study_report.py).

1. ``teachers`` (``NAME/pipeline``): a ``UNet2DModel`` (8×8, one channel, widths 32/64 with attention at 4×4:
   1.0 M parameters, 0.17 s per training step of 128 here, against 0.41 s for widths 64/128) trained the way
   diffusers' unconditional training example does it: x_t = ``DDPMScheduler.add_noise(x, ε, i)`` at a uniform
   integer index i (T = 1000), the MSE to ε (``epsilon``) or to ``get_velocity`` (``v_prediction``), AdamW at
   5e-4, an EMA of the weights, initial weights from seed 0 (``init_seed`` in teacher.json; a teacher.json
   without it: initialised from an unseeded generator, before that was fixed). One ε-prediction teacher on
   linear betas (the DDPM default) and one v-prediction teacher on squaredcos_cap_v2. Checkpoints every 250
   steps; the finished teacher is a ``DDPMPipeline`` folder (``save_pretrained``, EMA weights), reused when
   present. ``--only-stage1`` stops here.
2. ``students`` (``NAME/students/S{S}``): ``fewstep distill --teacher diffusers:NAME/pipeline --data digits
   --cond none --student-steps S`` for S = 2, 4, 8, run as a subprocess with this interpreter. The recipe is
   the CLI's default for a diffusers teacher (CD, since there is no teacher run to score; the student is the
   teacher's own UNet from its weights; aDDIM teacher step, N = 128; batch 128; EMA half-life 10%; an ε
   teacher's x̂ clipped and its student predicting v) with fewstep's student budget (``student_config``): a
   quarter of the teacher's iterations (``--student-iters``, default 1000 for a 4000-step teacher) at a fifth of
   its learning rate (``--student-lr``, default 1e-4). The CLI's own default applies the same rule to the data set's preset (digits: 1,000 iterations at 2e-4); the flags give the rule for this teacher's own budget and rate. Measured on the tiny run, on
   one thread beside another training job: 0.45–0.6 s per CD iteration against 0.28–0.32 s per teacher step,
   so with the teacher's 0.17 s per step (2 idle threads) a student iteration should take ~0.27 s: 1,000
   iterations in about 5 minutes, plus ~15 s to start the CLI and load the teacher. A finished run (its
   checkpoint at the asked iterations) is reused, an unfinished one continued with ``--resume``;
   checkpoints every 250 iterations; ``NAME/students/S{S}-calls.json`` keeps each call's wall-clock seconds.
   Item 2 of the issue (``--no-item2`` skips it): the ε/linear teacher's S = 4 student also with
   ``--no-teacher-clip`` (``S4-noclip``), against the default clipped one. Its other choice, a v-parameterised student against an ε one, has no CLI flag (the CLI always
   makes an ε teacher's student predict v); benchmarks/results/eps_teacher.json measured it from Python.
3. ``export`` (``NAME/export/S{S}``): ``fewstep export --run … --out …``; redone when the run has moved on.
4. ``samples`` (``NAME/samples/METHOD-nfeK-seedJ-nN.npz``, one per method, NFE and sampling seed; N samples
   of fixed noise ``torch.randn((N, 1, 8, 8), generator=manual_seed(J))``, the same for every method, in
   fewstep's model units [−1, 1]):
   - a student in stock diffusers without fewstep: ``UNet2DModel.from_pretrained`` + ``DDIMScheduler.
     from_pretrained`` on the export, ``set_timesteps(S)``, ``scheduler.step`` (``…-diffusers``, the raw loop);
     ``DDIMPipeline.from_pretrained(export)(num_inference_steps=S, generator=manual_seed(J))``, whose
     images in [0, 1] map back as 2x − 1 (``…-pipeline``); and fewstep's own sampler on the same noise
     (``…-fewstep``). The report gives the largest difference between them (a check that the export is the
     student: raw loop against fewstep, and the pipeline against fewstep clamped to [−1, 1]).
   - the teacher with diffusers' own schedulers on its pipeline folder, at NFE 2, 4, 8: ``ddim``
     (``DDIMScheduler``, eta 0) and ``unipc`` (``UniPCMultistepScheduler``), each built ``from_config`` of the
     teacher's saved scheduler config with ``timestep_spacing="trailing"`` (the first step at t = 1, the
     spacing few-step sampling needs); ``ddim-leading`` and ``unipc-leading``, the saved config as it is
     (DDPMScheduler's default "leading" spacing, which at 2 steps starts at index 500), what
     ``from_config(pipe.scheduler.config)`` gives a user. The saved config carries DDPMScheduler's
     ``clip_sample=True``, so diffusers' DDIM clamps x̂ (keeping the raw model output for the direction);
     UniPC has no such clip. ``ddim`` also at 256 steps, the many-step reference. As a cross-check,
     fewstep's own ``ddim`` and ``unipc`` (``fewstep-ddim``, ``fewstep-unipc``) on ``diffusers_teacher``,
     which clips an ε teacher's x̂ and recomputes ε̂ from it (docs/math.md §12); not at 256 steps (256 more
     calls per seed).
   The UNet sees chunks of 500 samples (memory; measured as fast per sample as 2,000 at once).
5. ``report``: FD-classifier (fewstep's metric: the Fréchet distance of the digits classifier's features,
   which clips its input to [−1, 1]) against the held-out split for every sample file (cached beside it as
   .json), with the noise floor (N training images against the held-out split, seed J); mean ± std over
   sampling seeds; each student against the best training-free sampler at its NFE (lowest mean FD over the six
   teacher methods), paired per seed: FD ratio student / best, and the excess ratio (student − DDIM-256) /
   (best − DDIM-256) of docs/math.md §11, which is unstable where the best few-step sampler is about as good
   as DDIM-256. Writes the JSON and the markdown table.

Cost at the defaults after stage 1 (2 threads on an idle machine; estimated from the tiny run, measured on one
thread beside another job): students 7 × ~5 minutes; one UNet call on 2,000 samples 1.2–1.3 s measured (one
busy thread), perhaps 0.6 s idle; per teacher and seed 84 calls of training-free samplers, 256 of DDIM-256 and
42 (ε teacher: 54) of students, so 3 seeds take 30–50 minutes of sampling; FD 0.25 s per sample file; the
seven exports ~10 s each (process start). In all about 1 to 1.5 hours, resumable at any point.

Every stage end to end on tiny settings, in about 4 minutes on one busy thread:
    python benchmarks/diffusers_study.py --runs /tmp/tiny --results /tmp/tiny/results --iters 20 \
        --student-iters 10 --samples 64 --seeds 1 --threads 1
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewstep.data import load_dataset
from fewstep.io import save_json, save_npz

TEACHERS = {"eps-linear": ("linear", "epsilon"), "v-cosine": ("squaredcos_cap_v2", "v_prediction")}
T, BATCH, LR, EMA_DECAY, CKPT_EVERY = 1000, 128, 5e-4, 0.999, 250


def ema_decay(step: int) -> float:
    """The EMA's decay after ``step`` updates, warmed up as diffusers' ``EMAModel`` does, min(0.999,
    (1 + k) / (10 + k)): a constant 0.999 from the first step left 0.999^2000 = 13.5% of the random initial
    weights in a 2,000-step teacher's EMA (its 256-step DDIM FD 131 against 50 for the raw weights, 300
    samples; the first study's teachers, benchmarks/results/diffusers_study.md)."""
    return min(EMA_DECAY, (1 + step) / (10 + step))
INIT_SEED = 0  # the UNet's initial weights; teacher.json without "init_seed": a teacher initialised unseeded (before this)


def unet():
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=(32, 64),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=16)


def train_teacher(root: Path, name: str, iters: int) -> Path:
    from diffusers import DDPMPipeline, DDPMScheduler

    beta_schedule, prediction = TEACHERS[name]
    folder = root / name
    done = folder / "pipeline"
    if (done / "model_index.json").is_file():
        print(f"[diffusers_study] {name}: reused", flush=True)
        return done
    folder.mkdir(parents=True, exist_ok=True)
    scheduler = DDPMScheduler(num_train_timesteps=T, beta_schedule=beta_schedule, prediction_type=prediction)
    x_all = load_dataset("digits").train  # [N, 1, 8, 8] in [−1, 1]
    torch.manual_seed(INIT_SEED)  # torch's global generator starts from a random seed in each process
    model = unet()
    ema = copy.deepcopy(model).requires_grad_(False)
    optimiser = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    step, ckpt = 0, folder / "ckpt.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"]), ema.load_state_dict(state["ema"]), optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        step = state["step"]
    tick, since = time.perf_counter(), step
    while step < iters:
        x = x_all[torch.randint(len(x_all), (BATCH,), generator=generator)]
        noise = torch.randn(x.shape, generator=generator)
        index = torch.randint(0, T, (BATCH,), generator=generator)
        z = scheduler.add_noise(x, noise, index)
        target = noise if prediction == "epsilon" else scheduler.get_velocity(x, noise, index)
        loss = torch.nn.functional.mse_loss(model(z, index).sample, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - ema_decay(step))
        step += 1
        if step % CKPT_EVERY == 0 or step == iters:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "optimiser": optimiser.state_dict(),
                        "generator": generator.get_state(), "step": step}, tmp)
            tmp.replace(ckpt)
            print(f"[diffusers_study] {name}: step {step}/{iters}, loss {loss.item():.4f}, "
                  f"{(time.perf_counter() - tick) / (step - since):.2f} s/step", flush=True)
            tick, since = time.perf_counter(), step
    DDPMPipeline(unet=ema, scheduler=scheduler).save_pretrained(str(done), safe_serialization=True)
    (folder / "teacher.json").write_text(json.dumps({"beta_schedule": beta_schedule, "prediction_type": prediction,
                                                     "iters": iters, "batch": BATCH, "lr": LR, "ema_decay": EMA_DECAY, "ema_warmup": "min(decay, (1 + k) / (10 + k))",
                                                     "init_seed": INIT_SEED}))
    return done


# -- stages 2–5 ---------------------------------------------------------------------------------------

STEPS = (2, 4, 8)           # student S = the training-free samplers' NFE
MANY = 256                  # the teacher's many-step DDIM
CHUNK = 500                 # samples per UNet call
CKPT_STUDENT = 250
FREE = {  # method: (library, sampler, timestep spacing: None keeps the saved config's)
    "ddim": ("diffusers", "DDIMScheduler", "trailing"),
    "unipc": ("diffusers", "UniPCMultistepScheduler", "trailing"),
    "ddim-leading": ("diffusers", "DDIMScheduler", None),
    "unipc-leading": ("diffusers", "UniPCMultistepScheduler", None),
    "fewstep-ddim": ("fewstep", "ddim", None),
    "fewstep-unipc": ("fewstep", "unipc", None),
}
ITEM2 = {"eps-linear": "S4-noclip"}  # the teacher whose S = 4 student is also distilled from the unclipped teacher
STUDENT_KINDS = ("diffusers", "pipeline", "fewstep")  # the same student sampled three ways
SCORE_KEYS = ("fd_classifier", "fd_floor", "class_tv", "class_tv_floor", "nn_copy_fraction")


def log(message: str) -> None:
    print(f"[diffusers_study] {message}", flush=True)


def calls_path(run: Path) -> Path:
    """Beside the run folder: the wall-clock seconds of each finished CLI call that trained it."""
    return run.with_name(f"{run.name}-calls.json")


def training_seconds(run: Path) -> dict[str, float | None]:
    """``cli``: the wall-clock seconds of the finished ``fewstep distill`` calls that made the run (process start,
    loading the teacher and the final quick evaluation included; a killed call is not counted); ``per_iter``: the
    median seconds per iteration the run's log reports."""
    calls = json.loads(calls_path(run).read_text()) if calls_path(run).is_file() else []
    rates = sorted(row["it_per_s"] for row in map(json.loads, filter(str.strip, (run / "log.jsonl").read_text().splitlines()))
                   if row.get("it_per_s"))
    return {"cli": sum(c["seconds"] for c in calls) if calls else None,
            "per_iter": 1 / rates[len(rates) // 2] if rates else None}


def run_step(run: Path) -> int | None:
    ckpt = run / "checkpoint.json"
    return int(json.loads(ckpt.read_text())["step"]) if ckpt.is_file() else None


def noise(n: int, seed: int) -> torch.Tensor:
    """The initial noise of every method at ``seed``: fewstep's ``generate`` and ``DDIMPipeline`` draw the same
    first ``randn`` from a generator seeded so, for n samples in one batch."""
    return torch.randn((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def stock_loop(unet, scheduler, z: torch.Tensor, steps: int) -> torch.Tensor:
    """diffusers' sampling loop (as DDIMPipeline runs it, without its clamp), over chunks of ``z``."""
    out = []
    for chunk in z.split(CHUNK):
        scheduler.set_timesteps(steps)  # also resets a multistep scheduler's history
        x = chunk
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x).prev_sample
        out.append(x)
    return torch.cat(out)


def diffusers_scheduler(folder: Path, kind: str, spacing: str | None):
    import diffusers

    cls = getattr(diffusers, kind)
    config = cls.load_config(str(folder))
    return cls.from_config(config, **({"timestep_spacing": spacing} if spacing else {}))


class Study:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = args.runs / "diffusers"
        self.n, self.seeds = args.samples, list(args.seeds)
        self.dataset = load_dataset("digits")
        self.env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}

    # -- paths and settings -----------------------------------------------------------------------------

    def pipeline(self, name: str) -> Path:
        return self.root / name / "pipeline"

    def ready(self, name: str) -> bool:
        if (self.pipeline(name) / "model_index.json").is_file():
            return True
        log(f"{name}: no finished teacher in {self.pipeline(name)} (stage teachers): skipped")
        return False

    def students_of(self, name: str) -> dict[str, tuple[int, list[str]]]:
        """key → (S, extra CLI flags)."""
        out: dict[str, tuple[int, list[str]]] = {f"S{s}": (s, []) for s in STEPS}
        if name in ITEM2 and not self.args.no_item2:
            out[ITEM2[name]] = (4, ["--no-teacher-clip"])
        return out

    def teacher_info(self, name: str) -> dict[str, Any]:
        """The teacher's teacher.json (stage 1 writes it just after the pipeline; its settings if that was cut short)."""
        path = self.root / name / "teacher.json"
        beta_schedule, prediction = TEACHERS[name]
        return json.loads(path.read_text()) if path.is_file() else {
            "beta_schedule": beta_schedule, "prediction_type": prediction, "iters": self.args.iters, "batch": BATCH, "lr": LR,
            "ema_decay": EMA_DECAY}

    def recipe(self, name: str) -> tuple[int, float]:
        """(iterations, learning rate) of a student: fewstep's student_config, a quarter of the teacher's
        iterations at a fifth of its rate, unless --student-iters / --student-lr say otherwise."""
        teacher = self.teacher_info(name)
        iters = self.args.student_iters or max(1, teacher["iters"] // 4)
        lr = self.args.student_lr or teacher["lr"] / 5
        return iters, lr

    def cli(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "fewstep.cli.main", *args, "--threads", str(self.args.threads)]
        log("$ " + " ".join(cmd[1:]))
        subprocess.run(cmd, check=True, env=self.env)

    # -- stage 2: students --------------------------------------------------------------------------------

    def students(self, name: str) -> None:
        iters, lr = self.recipe(name)
        for key, (steps, flags) in self.students_of(name).items():
            run = self.root / name / "students" / key
            step = run_step(run)
            if step is not None and step >= iters:
                if step > iters:
                    log(f"{name} {key}: the run in {run} has {step} iterations, more than the {iters} asked; reused as it is")
                log(f"{name} {key}: reused ({step} iterations)")
                continue
            tick = time.perf_counter()
            self.cli("distill", "--teacher", f"diffusers:{self.pipeline(name)}", "--data", "digits", "--cond", "none",
                     "--student-steps", str(steps), "--iters", str(iters), "--lr", f"{lr:g}", "--batch", str(BATCH),
                     "--ckpt-every", str(min(CKPT_STUDENT, iters)), "--seed", "0", "--no-progress", "--out", str(run),
                     *flags, *(["--resume"] if run.exists() else []))
            seconds = time.perf_counter() - tick
            calls = json.loads(calls_path(run).read_text()) if calls_path(run).is_file() else []
            save_json(calls_path(run), [*calls, {"iters": iters, "from_step": step or 0, "seconds": seconds}])
            log(f"{name} {key}: trained in {seconds:.0f} s")

    # -- stage 3: export ----------------------------------------------------------------------------------

    def export(self, name: str) -> None:
        for key in self.students_of(name):
            run, out = self.root / name / "students" / key, self.root / name / "export" / key
            step = run_step(run)
            if step is None:
                log(f"{name} {key}: no student run yet (stage students): not exported")
                continue
            info = out / "fewstep.json"
            if info.is_file() and json.loads(info.read_text())["run"]["step"] == step:
                log(f"{name} {key}: export reused")
                continue
            self.cli("export", "--run", str(run), "--out", str(out), *(["--overwrite"] if out.exists() else []))

    # -- stage 4: samples ---------------------------------------------------------------------------------

    def sample_path(self, name: str, method: str, nfe: int, seed: int) -> Path:
        return self.root / name / "samples" / f"{method}-nfe{nfe}-seed{seed}-n{self.n}.npz"

    def cached(self, name: str, method: str, nfe: int, seed: int, make: Callable[[], torch.Tensor]) -> None:
        path = self.sample_path(name, method, nfe, seed)
        if path.is_file():
            return
        tick = time.perf_counter()
        x = make().float().cpu()
        seconds = time.perf_counter() - tick
        save_npz(path, x=x.numpy(), seconds=np.float64(seconds))
        log(f"{name} {method} NFE {nfe} seed {seed}: {seconds:.1f} s")

    def teacher_samples(self, name: str) -> None:
        import diffusers

        from fewstep.runs.diffusers_teacher import diffusers_teacher
        from fewstep.samplers import SamplerSpec
        from fewstep.sampling import generate

        folder = self.pipeline(name)
        unet = diffusers.UNet2DModel.from_pretrained(str(folder / "unet")).eval()
        ours = diffusers_teacher(folder, self.dataset)  # ε: x̂ clipped, as fewstep samples and distils it
        for seed in self.seeds:
            z = noise(self.n, seed)
            for method, (library, sampler, spacing) in FREE.items():
                for nfe in (*STEPS, MANY) if method == "ddim" else STEPS:
                    if library == "diffusers":
                        make = lambda: stock_loop(unet, diffusers_scheduler(folder / "scheduler", sampler, spacing), z, nfe)  # noqa: B023
                    else:  # generate draws z itself: the same first randn of n samples in one batch
                        make = lambda: generate(ours, self.n, self.dataset.shape, SamplerSpec(sampler, nfe), seed=seed,  # noqa: B023
                                                batch_size=self.n)
                    self.cached(name, method, nfe, seed, make)

    def student_samples(self, name: str) -> None:
        import diffusers

        import fewstep

        for key, (steps, _) in self.students_of(name).items():
            run, folder = self.root / name / "students" / key, self.root / name / "export" / key
            info = folder / "fewstep.json"
            step = run_step(run)
            if step is None or not info.is_file() or json.loads(info.read_text())["run"]["step"] != step:
                log(f"{name} {key}: no current export (stages students, export): not sampled")
                continue
            unet = diffusers.UNet2DModel.from_pretrained(str(folder / "unet")).eval()
            scheduler = diffusers.DDIMScheduler.from_pretrained(str(folder / "scheduler"))
            pipe = diffusers.DDIMPipeline.from_pretrained(str(folder))
            pipe.set_progress_bar_config(disable=True)
            student = fewstep.load(run, device="cpu")
            method = f"student-{key}-step{step}"
            for seed in self.seeds:
                def from_pipeline() -> torch.Tensor:
                    images = pipe(batch_size=self.n, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),  # noqa: B023
                                  output_type="np").images
                    return torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1

                self.cached(name, f"{method}-diffusers", steps, seed, lambda: stock_loop(unet, scheduler, noise(self.n, seed), steps))  # noqa: B023
                self.cached(name, f"{method}-pipeline", steps, seed, from_pipeline)
                self.cached(name, f"{method}-fewstep", steps, seed, lambda: student.sample_tensor(self.n, seed=seed, batch_size=self.n))  # noqa: B023

    def samples(self, name: str) -> None:
        self.student_samples(name)
        self.teacher_samples(name)

    # -- stage 5: scores and the report -------------------------------------------------------------------

    def score(self, path: Path) -> dict[str, Any]:
        """FD-classifier and friends of one sample file, cached beside it."""
        cache = path.with_suffix(".json")
        if cache.is_file():
            return json.loads(cache.read_text())
        from fewstep.metrics import evaluate_samples

        data = np.load(path)
        x = torch.from_numpy(data["x"])
        finite = torch.isfinite(x)
        seed = int(path.stem.split("-seed")[1].split("-")[0])
        # the classifier clips its input to [−1, 1]: a non-finite value scores as the end of the range it points to
        scores = evaluate_samples(self.dataset, torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0), seed_floor=seed)
        shown = x[finite]
        row = {**{k: scores[k] for k in SCORE_KEYS}, "seed": seed, "seconds": float(data["seconds"]),
               "nonfinite": float(1 - finite.float().mean()), "outside": float((shown.abs() > 1).float().mean()),
               "std": float(shown.std()) if shown.numel() > 1 else None}
        save_json(cache, row)
        return row

    def rows(self, name: str, method: str, nfe: int) -> dict[int, dict[str, Any]]:
        """seed → scores, for the seeds whose sample file exists."""
        out = {}
        for seed in self.seeds:
            path = self.sample_path(name, method, nfe, seed)
            if path.is_file():
                out[seed] = self.score(path)
        return out

    def report(self) -> dict[str, Any]:
        from diffusers_study_report import markdown

        from fewstep.metrics import aggregate
        from fewstep.runs.folder import read_run

        def spread(per_seed: dict[int, dict[str, Any]], key: str = "fd_classifier") -> dict[str, Any] | None:
            return aggregate([per_seed[s][key] for s in sorted(per_seed)]) if per_seed else None

        def summary(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
            return {"fd": spread(per_seed), "floor": spread(per_seed, "fd_floor"), "seeds": sorted(per_seed),
                    "outside": max(r["outside"] for r in per_seed.values()), "nonfinite": max(r["nonfinite"] for r in per_seed.values()),
                    "std": spread(per_seed, "std"), "seconds_per_seed": sum(r["seconds"] for r in per_seed.values()) / len(per_seed)}

        results: dict[str, Any] = {
            "settings": {"samples": self.n, "seeds": self.seeds, "steps": list(STEPS),
                         "many_steps": MANY, "chunk": CHUNK, "threads": self.args.threads, "free_methods": FREE},
            "teachers": {},
        }
        for name in TEACHERS:
            if not (self.pipeline(name) / "model_index.json").is_file():
                continue
            teacher = self.teacher_info(name)
            free: list[dict[str, Any]] = []
            per_seed_free: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
            for method in FREE:
                for nfe in (*STEPS, MANY) if method == "ddim" else STEPS:
                    got = self.rows(name, method, nfe)
                    if got:
                        per_seed_free[method, nfe] = got
                        free.append({"method": method, "nfe": nfe, **summary(got)})
            many = per_seed_free.get(("ddim", MANY), {})
            students: dict[str, Any] = {}
            iters, lr = self.recipe(name)
            for key, (steps, flags) in self.students_of(name).items():
                run = self.root / name / "students" / key
                step = run_step(run)
                if step is None:
                    continue
                config, card, _ = read_run(run)
                row: dict[str, Any] = {"S": steps, "flags": flags, "iters": step, "lr": config.lr, "objective": config.objective,
                                       "teacher_clip": card.teacher_clip, "teacher_sampler": config.teacher_sampler,
                                       "n": [config.n0, config.n1], "batch": config.batch, "prediction": config.prediction,
                                       "train_seconds": training_seconds(run)}
                kinds = {kind: self.rows(name, f"student-{key}-step{step}-{kind}", steps) for kind in STUDENT_KINDS}
                for kind, got in kinds.items():
                    row[kind] = summary(got) if got else None
                row["max_abs_diff"] = self.differences(name, f"student-{key}-step{step}", steps)
                mine = kinds["diffusers"]
                candidates = [(method, got) for (method, nfe), got in per_seed_free.items() if nfe == steps]
                if mine and candidates:
                    method, best = min(candidates, key=lambda c: spread(c[1])["mean"])
                    paired = [s for s in sorted(mine) if s in best]
                    row["best_free"] = {"method": method, "fd": spread({s: best[s] for s in paired})}
                    row["ratio_to_best_free"] = aggregate([mine[s]["fd_classifier"] / best[s]["fd_classifier"] for s in paired])
                    pm = [s for s in paired if s in many]
                    if pm:
                        row["excess_ratio"] = aggregate([(mine[s]["fd_classifier"] - many[s]["fd_classifier"])
                                                         / (best[s]["fd_classifier"] - many[s]["fd_classifier"]) for s in pm])
                        row["ratio_to_ddim256"] = aggregate([mine[s]["fd_classifier"] / many[s]["fd_classifier"] for s in pm])
                students[key] = row
            results["teachers"][name] = {"teacher": teacher, "student_recipe": {"iters": iters, "lr": lr},
                                         "free": free, "students": students}
            if name in ITEM2 and ITEM2[name] in students:  # item 2: the unclipped teacher's student over the clipped one's
                clipped, raw = (self.rows(name, f"student-{k}-step{students[k]['iters']}-diffusers", 4) for k in ("S4", ITEM2[name]))
                paired = [s for s in sorted(raw) if s in clipped]
                results["teachers"][name]["item2"] = {
                    "clipped": spread(clipped), "not_clipped": spread(raw),
                    "ratio_not_clipped_to_clipped": aggregate([raw[s]["fd_classifier"] / clipped[s]["fd_classifier"] for s in paired])
                    if paired else None}
        floors = {seed: r["fd_floor"] for name in results["teachers"] for seed, r in self.rows(name, "ddim", MANY).items()}
        results["floor"] = aggregate([floors[s] for s in sorted(floors)]) if floors else None  # the same n and seed: one per seed
        out = self.args.results
        save_json(out / "diffusers_study.json", results)
        (out / "diffusers_study.md").write_text(markdown(results))
        log(f"wrote {out / 'diffusers_study.json'} and {out / 'diffusers_study.md'}")
        return results

    def differences(self, name: str, method: str, steps: int) -> dict[str, float] | None:
        """The largest |difference| over seeds: the raw diffusers loop against fewstep's sampler, DDIMPipeline's
        images (in model units) against fewstep's clamped to [−1, 1], and against the raw loop clamped."""
        out: dict[str, float] = {}
        for seed in self.seeds:
            paths = {kind: self.sample_path(name, f"{method}-{kind}", steps, seed) for kind in STUDENT_KINDS}
            if not all(p.is_file() for p in paths.values()):
                continue
            x = {kind: torch.from_numpy(np.load(p)["x"]) for kind, p in paths.items()}
            pairs = {"loop_vs_fewstep": (x["diffusers"], x["fewstep"]),
                     "pipeline_vs_fewstep": (x["pipeline"], x["fewstep"].clamp(-1, 1)),
                     "pipeline_vs_loop": (x["pipeline"], x["diffusers"].clamp(-1, 1))}
            for key, (a, b) in pairs.items():
                out[key] = max(out.get(key, 0.0), float((a - b).abs().max()))
        return out or None


STAGES = ("teachers", "students", "export", "samples", "report")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--iters", type=int, default=4000, help="teacher training steps")
    parser.add_argument("--student-iters", type=int, help="student iterations (default: a quarter of the teacher's)")
    parser.add_argument("--student-lr", type=float, help="student learning rate (default: a fifth of the teacher's)")
    parser.add_argument("--samples", type=int, default=2000, help="samples per method, NFE and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds")
    parser.add_argument("--teachers", nargs="+", choices=list(TEACHERS), default=list(TEACHERS))
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--only-stage1", action="store_true", help="train the teachers only (--stages teachers)")
    parser.add_argument("--no-item2", action="store_true", help="skip the ε teacher's S = 4 student of the unclipped teacher")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stages = ["teachers"] if args.only_stage1 else args.stages
    study: Study | None = None  # made when a later stage needs it (it loads the data)
    for stage in STAGES:
        if stage not in stages:
            continue
        tick = time.perf_counter()
        if stage == "teachers":
            for name in args.teachers:
                train_teacher(args.runs / "diffusers", name, args.iters)
        else:
            study = study or Study(args)
            if stage == "report":
                study.report()
            for name in args.teachers if stage != "report" else ():
                if study.ready(name):
                    getattr(study, stage)(name)
        log(f"stage {stage}: {time.perf_counter() - tick:.0f} s")


if __name__ == "__main__":
    main()
