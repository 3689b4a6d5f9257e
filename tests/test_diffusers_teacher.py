"""diffusers teachers (``--teacher diffusers:PATH``, docs/math.md §12): tiny UNet2DModels saved with
``save_pretrained`` into temporary folders, read back as fewstep denoisers on a tabulated schedule.

Mapping: diffusers' index i is our t_i = (i + 1)/T and its ᾱ_i our α(t_i)²; the UNet is called at the
float timestep t·T − 1; its output is ε̂, v̂ or x̂ by the scheduler's prediction_type.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import fewstep
from fewstep.data import load_dataset
from fewstep.errors import UserError
from fewstep.runs.config import PRESETS
from fewstep.objectives import MultistepObjective
from fewstep.param import Clipped
from fewstep.runs import ModelConfig, TrainConfig
from fewstep.runs.build import build_denoiser
from fewstep.runs.diffusers_teacher import class_index, diffusers_teacher, read_folder
from fewstep.runs.objective import make_objective
from fewstep.runs.teachers import on_schedule, student_settings
from fewstep.samplers import ddim, ddim_step
from fewstep.schedules import CosineSchedule, TabulatedSchedule, logsnr_range, schedule_from_dict, time_grid

diffusers = pytest.importorskip("diffusers")

K = 10  # digits' classes
BETAS = ("linear", "scaled_linear", "squaredcos_cap_v2", "trained_betas")
PREDICTIONS = ("epsilon", "v_prediction", "sample")
SCHEDULERS = {"ddpm": diffusers.DDPMScheduler, "ddim": diffusers.DDIMScheduler}


def tiny_unet(num_class_embeds: int | None = None, seed: int = 0):
    """A UNet2DModel for digits' [1, 8, 8] images: 2 levels of 4 and 8 channels, no attention (~10k weights)."""
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(4, 8), layers_per_block=1,
                                 norm_num_groups=4, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                                 num_class_embeds=num_class_embeds)


def make_scheduler(beta: str = "linear", prediction: str = "v_prediction", kind: str = "ddpm", steps: int = 1000, **extra):
    if beta == "trained_betas":  # any increasing table: a geometric ramp
        extra["trained_betas"] = np.geomspace(1e-4, 0.02, steps).astype(np.float32).tolist()
    else:
        extra["beta_schedule"] = beta
    return SCHEDULERS[kind](num_train_timesteps=steps, prediction_type=prediction, **{"clip_sample": False, **extra})


def save(folder: Path, unet, scheduler, layout: str = "pipeline") -> Path:
    """A pipeline folder (model_index.json, unet/, scheduler/) or the unet/ + scheduler/ pair alone."""
    if layout == "pipeline":
        pipeline = diffusers.DDIMPipeline if isinstance(scheduler, diffusers.DDIMScheduler) else diffusers.DDPMPipeline
        pipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    else:
        unet.save_pretrained(folder / "unet")
        scheduler.save_pretrained(folder / "scheduler")
    return folder


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """An unconditional v-prediction UNet with a linear DDPMScheduler, as a pipeline folder (read-only)."""
    return save(tmp_path_factory.mktemp("diffusers") / "base", tiny_unet(), make_scheduler())


# --- the schedule: ᾱ from diffusers' own betas, and λ between the grid points ----------------------

@pytest.mark.parametrize("kind", SCHEDULERS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("beta", BETAS)
def test_alphas_cumprod_are_diffusers_betas_cumprod_in_float64(tmp_path, beta, prediction, kind):
    scheduler = make_scheduler(beta, prediction, kind)
    folder = read_folder(str(save(tmp_path / "teacher", tiny_unet(), scheduler)))
    exact = torch.cumprod(1.0 - scheduler.betas.double(), dim=0)
    assert torch.equal(folder.schedule.alphas_cumprod, exact)
    # diffusers' own cumprod runs in float32 and drifts by up to ~6e-7 over 1000 steps on these tables
    assert torch.allclose(folder.schedule.alphas_cumprod, scheduler.alphas_cumprod.double(), rtol=1e-6, atol=0)
    t_i = torch.arange(1, 1001, dtype=torch.float64) / 1000
    alpha, sigma = folder.schedule.alpha_sigma(t_i)
    assert torch.allclose(alpha.double() ** 2, exact, rtol=1e-6, atol=0)  # float32 rounding of α only
    assert torch.allclose(sigma.double() ** 2, 1 - exact, rtol=1e-6, atol=1e-12)
    assert folder.prediction == {"epsilon": "eps", "v_prediction": "v", "sample": "x"}[prediction]
    assert schedule_from_dict(folder.schedule.to_dict()).to_dict() == folder.schedule.to_dict()
    json.dumps(folder.schedule.to_dict())  # a run's config.json holds it


def test_logsnr_is_linear_in_t_between_grid_points_and_clamped_below_t0():
    schedule = TabulatedSchedule(make_scheduler("squaredcos_cap_v2", steps=64).betas)
    lam = schedule.logsnr_table
    t = torch.tensor([(10 + 0.25) / 64, (63 + 0.0) / 64], dtype=torch.float64)  # between i = 9 and 10; i = 62
    expected = torch.stack([lam[9] + 0.25 * (lam[10] - lam[9]), lam[62]]).float()
    assert torch.allclose(schedule.logsnr(t), expected, rtol=1e-6)
    assert torch.allclose(schedule.t_from_logsnr(expected), t.float(), atol=1e-6)
    below = schedule.logsnr(torch.tensor([1e-4, 0.5 / 64, 1 / 64]))
    assert torch.equal(below, torch.full((3,), float(lam[0])))  # (0, t_0) is t_0
    alpha, sigma = schedule.alpha_sigma(torch.tensor([0.0, 0.5 / 64]))
    assert (alpha[0].item(), sigma[0].item()) == (1.0, 0.0) and 0 < sigma[1].item() < 1  # t = 0 is the data
    assert logsnr_range(schedule) == (float(lam[-1].float()), float(lam[0].float()))
    assert schedule.t_from_logsnr(torch.tensor([100.0, -100.0])).tolist() == [1 / 64, 1.0]


def test_zero_terminal_snr_is_a_finite_stand_in_and_bad_tables_are_refused():
    betas = make_scheduler("scaled_linear", steps=100, rescale_betas_zero_snr=True).betas
    schedule = TabulatedSchedule(betas)
    assert schedule.alphas_cumprod[-1] == 0 and torch.isfinite(schedule.logsnr(torch.tensor([1.0]))).all()
    assert schedule.alpha_sigma(torch.tensor([1.0]))[0].item() < 1e-8
    for bad in ([0.1], [0.0, 0.1], [0.1, 1.0, 0.1], [0.1, float("nan")]):
        with pytest.raises(ValueError):
            TabulatedSchedule(bad)


def test_a_cosine_student_outside_a_tables_range_is_refused_in_one_short_line():
    table = TabulatedSchedule(make_scheduler("linear").betas)  # λ ∈ [−10.1, 9.2]
    teacher = type("Teacher", (), {"schedule": table})()
    with pytest.raises(UserError, match="does not cover") as info:
        on_schedule(teacher, CosineSchedule())
    assert "<1000 values>" in str(info.value) and len(str(info.value)) < 400


def test_objectives_draw_no_time_below_t0():
    from fewstep.objectives import DiffusionObjective, MultistepECTObjective
    from fewstep.param import Denoiser

    schedule = TabulatedSchedule(make_scheduler("linear", steps=20).betas)  # t_0 = 0.05
    denoiser = Denoiser(torch.nn.Identity(), schedule)
    denoiser.raw = lambda z, t, cond=None: torch.zeros_like(z)  # the times are what is tested, not the network
    out = DiffusionObjective()(denoiser, torch.zeros(256, 2), None, 0, torch.Generator().manual_seed(0))
    assert out.t.min() >= 0.05
    times = MultistepECTObjective(4, iters=10).ect_times(schedule, 256, 0, torch.Generator().manual_seed(0))
    assert times.t.min() >= 0.05


def test_multistep_consistency_caps_n_at_the_tables_t():
    objective = MultistepObjective(None, 4, iters=10, n0=128, n1=128, n_max=50)
    assert objective.n_seg_at(0) == 12  # S·N_seg = 48 ≤ T = 50, not 128
    assert MultistepObjective(None, 4, iters=10, n0=128, n1=128).n_seg_at(0) == 32


# --- the UNet as a denoiser ----------------------------------------------------------------------

@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("beta", BETAS)
def test_x_hat_is_the_schedulers_own_conversion(tmp_path, digits, beta, prediction):
    """At integer timesteps (T = 1024: every t_i is exact in float32) x̂ is DDIMScheduler.step's
    pred_original_sample for the UNet's raw output; an ε teacher's is clipped to [−1, 1] like clip_sample's."""
    steps = 1024
    unet = tiny_unet(K + 1)
    scheduler = make_scheduler(beta, prediction, "ddim", steps=steps, clip_sample=prediction == "epsilon")
    teacher = diffusers_teacher(save(tmp_path / "t", unet, scheduler), digits)
    scheduler.set_timesteps(8)
    z = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 3, 9, K])  # K: fewstep's null, the UNet's index K by default
    for i in (0, 17, 511, steps - 1):
        with torch.no_grad():
            raw = unet(z, torch.full((4,), i), class_labels=labels).sample
            ours = teacher(z, torch.full((4,), (i + 1) / steps), {"class": labels}).x_hat
        theirs = scheduler.step(raw, i, z, eta=0.0).pred_original_sample
        assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max(), (i, (ours - theirs).abs().max())


def test_a_fractional_time_is_not_truncated_and_times_below_t0_are_index_0(tmp_path, digits):
    steps = 1024
    teacher = diffusers_teacher(save(tmp_path / "t", tiny_unet(), make_scheduler(steps=steps)), digits)
    seen: list[torch.Tensor] = []
    teacher.backbone.unet.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    z = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x_hat = {i: teacher(z, (i + 1) / steps).x_hat for i in (0, 17, 17.5, 18, -0.75)}
    assert seen[2].dtype == torch.float32 and seen[2].tolist() == [17.5, 17.5]
    assert not torch.allclose(x_hat[17.5], x_hat[17]) and not torch.allclose(x_hat[17.5], x_hat[18])
    assert seen[4].tolist() == [0.0, 0.0] and torch.equal(x_hat[-0.75], x_hat[0])  # t = 0.25/T is t_0


def test_both_layouts_give_the_same_teacher(tmp_path, digits):
    unet, scheduler = tiny_unet(), make_scheduler("scaled_linear", "epsilon")
    pipeline = diffusers_teacher(save(tmp_path / "pipeline", unet, scheduler), digits)
    pair = diffusers_teacher(save(tmp_path / "pair", unet, scheduler, layout="pair"), digits)
    assert not (tmp_path / "pair" / "model_index.json").exists() and (tmp_path / "pipeline" / "model_index.json").exists()
    assert pipeline.schedule.to_dict() == pair.schedule.to_dict()
    z, t = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 0.5, 0.9])
    with torch.no_grad():
        assert torch.equal(pipeline(z, t).x_hat, pair(z, t).x_hat)


def test_labels_map_onto_the_unets_classes_around_its_null():
    assert class_index(None, K, None) is None
    assert class_index(K + 1, K, None) == list(range(K + 1))            # null = K
    assert class_index(K + 1, K, 0) == list(range(1, K + 1)) + [0]      # null first: the classes shift up
    assert class_index(K, K, None) == list(range(K))                    # no null
    with pytest.raises(UserError, match="teacher_null_class"):
        class_index(K + 1, K, K + 1)


def test_a_missing_class_is_the_unets_null_and_the_null_index_is_configurable(tmp_path, digits):
    unet = tiny_unet(K + 1)
    folder = save(tmp_path / "t", unet, make_scheduler())
    z, t = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 0.7])
    with torch.no_grad():
        teacher = diffusers_teacher(folder, digits, null_class=0)
        null = teacher(z, t).x_hat
        assert torch.equal(null, teacher(z, t, {"class": torch.tensor([K, K])}).x_hat)
        timestep = (t.double() * 1000 - 1).float()
        v_null = unet(z, timestep, class_labels=torch.zeros(2, dtype=torch.long)).sample
        v_two = unet(z, timestep, class_labels=torch.tensor([3, 3])).sample
        alpha, sigma = (a.reshape(2, 1, 1, 1) for a in teacher.schedule.alpha_sigma(t))
        assert torch.allclose(null, alpha * z - sigma * v_null, atol=1e-6)
        assert torch.allclose(teacher(z, t, {"class": torch.tensor([2, 2])}).x_hat, alpha * z - sigma * v_two, atol=1e-6)


# --- ε-prediction teachers: x̂ clipped in CD and sampling, v students ------------------------------

def test_clipped_is_the_clamped_x_hat_with_eps_from_it_and_diffusers_clip_sample_step(tmp_path, digits):
    """Closed form: x̂ = clamp(x̂_raw, −1, 1), ε̂ = (z − α x̂)/σ. A DDIM step with it is DDIMScheduler.step with
    clip_sample and use_clipped_model_output, and fewstep's ddim with clip_x is the same sampler."""
    steps = 1024
    unet, scheduler = tiny_unet(), make_scheduler("squaredcos_cap_v2", "epsilon", "ddim", steps=steps, clip_sample=True,
                                                  timestep_spacing="trailing")
    raw = diffusers_teacher(save(tmp_path / "t", unet, scheduler), digits, clip_x=False)
    clipped = Clipped(raw)
    z = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([1.0, 0.7, 0.3, 0.05])
    with torch.no_grad():
        pred, inner = clipped(z, t), raw(z, t)
    alpha, sigma = (a.reshape(4, 1, 1, 1) for a in raw.schedule.alpha_sigma(t))
    assert torch.equal(pred.x_hat, inner.x_hat.clamp(-1, 1)) and torch.equal(pred.eps_hat, (z - alpha * pred.x_hat) / sigma)
    assert (inner.x_hat[0].abs() > 1).float().mean() > 0.5  # at t = 1 the raw x̂ of an ε-model leaves the range
    scheduler.set_timesteps(8)
    i, s = int(scheduler.timesteps[0]), (int(scheduler.timesteps[1]) + 1) / steps
    with torch.no_grad():
        theirs = scheduler.step(unet(z, i).sample, i, z, eta=0.0, use_clipped_model_output=True).prev_sample
        ours = ddim_step(raw.schedule, clipped(z, 1.0).x_hat, z, torch.ones(4), torch.full((4,), s))
    assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()
    ts = time_grid(4)
    assert torch.equal(ddim(clipped, z, ts), ddim(raw, z, ts, clip_x=True))


@pytest.mark.parametrize("prediction, asked, clipped", [
    ("epsilon", None, True), ("v_prediction", None, False), ("epsilon", False, False), ("v_prediction", True, True)])
def test_cd_clips_the_x_hat_of_an_eps_teacher_of_images_and_its_student_predicts_v(tmp_path, digits, prediction, asked, clipped):
    folder = save(tmp_path / "t", tiny_unet(), make_scheduler("squaredcos_cap_v2", prediction, steps=64))
    config = TrainConfig(data="digits", objective="cd", teacher=f"diffusers:{folder}", model=ModelConfig("diffusers-unet"),
                         cond="none", teacher_clip=asked, iters=1)
    config = student_settings(config, digits)
    assert config.prediction == "v" and config.init == "teacher"  # an ε teacher's student too
    student = build_denoiser(config, digits.shape, None)
    composed = make_objective(config, digits, torch.device("cpu"), student)
    teacher = composed.objective.teacher
    assert isinstance(teacher, Clipped) == clipped and composed.card["teacher_clip"] is clipped
    with torch.no_grad():
        x_hat = teacher(torch.randn(8, 1, 8, 8), torch.ones(8)).x_hat
    if clipped or prediction == "epsilon":  # unclipped, an ε-model's x̂ at t = 1 is (z − σ ε̂)/α with α = 4.9e-5
        assert (x_hat.abs().max() <= 1) == clipped
    unet = {f"unet.{k}": v for k, v in tiny_unet().state_dict().items()}  # the student starts from these (train loads them)
    assert composed.teacher.weights.keys() == student.backbone.state_dict().keys() == unet.keys()
    assert all(torch.equal(composed.teacher.weights[k], unet[k]) for k in unet)


def test_a_clip_is_refused_for_points(tmp_path, cli, moons_run):
    code, _, err = cli("distill", "--teacher", moons_run, "--objective", "cd", "--teacher-clip", "--iters", "1",
                       "--out", tmp_path / "run", "--no-progress")
    assert code == 2 and err.startswith("fewstep: error: --teacher-clip: ") and "images" in err, err
    assert not (tmp_path / "run").exists()


# --- through the CLI ----------------------------------------------------------------------------

def edit(folder: Path, part: str, **changes) -> None:
    """Change fields of unet/config.json or scheduler/scheduler_config.json (None deletes nothing: it sets null)."""
    path = folder / part / ("config.json" if part == "unet" else "scheduler_config.json")
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


REFUSALS = {
    # name: (how the copy of the base folder is spoiled, extra flags, flag named, words of the message)
    "hub id": (None, [], "--teacher", "does not download"),
    "missing folder": (lambda f: shutil.rmtree(f), [], "--teacher", "no such folder"),
    "not a layout": (lambda f: shutil.rmtree(f / "scheduler"), [], "--teacher", "unet/ + scheduler/"),
    "text UNet without captions": (lambda f: edit(f, "unet", _class_name="UNet2DConditionModel"), [], "--teacher",
                                   "reads captions; the data 'digits' has none"),
    "captions for a UNet2DModel": (None, ["--data", "digits-text", "--cond", "text"], "--cond", "reads no captions"),
    "other model": (lambda f: edit(f, "unet", _class_name="UVit2DModel"), [], "--teacher", "unsupported model class"),
    "flow matching": (lambda f: edit(f, "scheduler", _class_name="FlowMatchEulerDiscreteScheduler"), [], "--teacher", "unsupported scheduler"),
    "Karras VE": (lambda f: edit(f, "scheduler", _class_name="KarrasVeScheduler"), [], "--teacher", "unsupported scheduler"),
    "class embed type": (lambda f: edit(f, "unet", class_embed_type="timestep"), [], "--teacher", "class_embed_type 'timestep'"),
    "learned variance": (lambda f: edit(f, "unet", out_channels=2), [], "--teacher", "learned-variance"),
    "learned variance type": (lambda f: edit(f, "scheduler", variance_type="learned_range"), [], "--teacher", "learned variance"),
    "zero SNR with eps": (lambda f: edit(f, "scheduler", rescale_betas_zero_snr=True, prediction_type="epsilon"), [], "--teacher", "zero terminal SNR"),
    "fourier time": (lambda f: edit(f, "unet", time_embedding_type="fourier"), [], "--teacher", "time_embedding_type 'fourier'"),
    "other beta schedule": (lambda f: edit(f, "scheduler", beta_schedule="sigmoid"), [], "--teacher", "beta_schedule 'sigmoid'"),
    "latent pipeline": (lambda f: (f / "model_index.json").write_text(json.dumps({"_class_name": "LDMPipeline", "vqvae": ["diffusers", "VQModel"]})),
                        [], "--teacher", "latent diffusion"),
    "sample size": (lambda f: edit(f, "unet", sample_size=16), [], "--teacher", "[1, 16, 16]"),
    "channels": (lambda f: edit(f, "unet", in_channels=3, out_channels=3), [], "--teacher", "[3, 8, 8]"),
    "points data": (None, ["--data", "moons"], "--teacher", "the data has examples of shape [2]"),
    "class count": (lambda f: edit(f, "unet", num_class_embeds=7), [], "--teacher", "7 class embeddings"),
    "no null to guide": (lambda f: edit(f, "unet", num_class_embeds=K), ["--guidance", "2"], "--guidance", "cannot be guided"),
    "null out of range": (lambda f: edit(f, "unet", num_class_embeds=K + 1), ["--teacher-null-class", "11"], "--teacher-null-class", "0..10"),
    "unconditional null": (None, ["--teacher-null-class", "3"], "--teacher-null-class", "no null class"),
    "class student": (None, ["--cond", "class"], "--cond", "unconditional"),
    "init teacher": (None, ["--model", "mlp", "--init", "teacher"], "--init", "only as the teacher's own UNet"),
    "width of its own UNet": (None, ["--width", "8"], "--width", "the teacher's config"),
    "unconditional own UNet": (lambda f: edit(f, "unet", num_class_embeds=K + 1), ["--cond", "none"], "--cond", "teacher's own class-conditional UNet"),
    "no safetensors": (lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors").rename(f / "unet" / "diffusion_pytorch_model.bin"),
                       [], "--teacher", "only from safetensors"),
    "damaged weights": (lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 64), [], "--teacher",
                        "cannot load the UNet's weights"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_bad_input_is_one_line_naming_the_flag_and_leaves_no_run(tmp_path, cli, base, monkeypatch, case):
    spoil, flags, flag, words = REFUSALS[case]
    monkeypatch.chdir(tmp_path)  # the hub id is no folder here
    folder = tmp_path / "teacher"
    shutil.copytree(base, folder)
    if spoil is not None:
        spoil(folder)
    source = "google/ddpm-cifar10-32" if case == "hub id" else folder
    args = ["--data", "digits", *flags] if "--data" not in flags else flags
    code, _, err = cli("distill", "--teacher", f"diffusers:{source}", "--out", tmp_path / "run", "--iters", "1",
                       "--eval-samples", "10", "--no-progress", *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"fewstep: error: {flag}: ") and words in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, model, init", [([], "diffusers-unet", "teacher"), (["--model", "unet", "--width", "16"], "unet", "none")])
def test_a_cd_student_of_a_class_conditional_diffusers_teacher_trains_and_samples(tmp_path, cli, flags, model, init):
    """By default the student is the teacher's own UNet from its weights; another backbone trains from scratch."""
    teacher = save(tmp_path / "teacher", tiny_unet(K + 1), make_scheduler("squaredcos_cap_v2", "epsilon", "ddim"), layout="pair")
    code, _, err = cli("train", "--objective", "cd", "--teacher", f"diffusers:{teacher}", "--data", "digits", "--out", tmp_path / "student",
                       "--student-steps", "2", "--iters", "3", "--batch", "16", "--eval-samples", "10", "--no-progress", *flags)
    assert code == 0, err
    run = fewstep.load(tmp_path / "student", device="cpu")
    assert run.config.schedule == read_folder(str(teacher)).schedule.to_dict() and run.config.cond == "class"
    assert (run.config.model.name, run.config.init) == (model, init) and run.card.teacher == f"diffusers:{teacher}"
    assert run.config.prediction == "v" and run.card.teacher_clip is True  # of an ε teacher on squaredcos_cap_v2
    preset = PRESETS["digits"]  # from the teacher's weights: a run-folder teacher's student recipe, else the preset's
    assert run.config.lr == (preset.lr / 5 if init == "teacher" else preset.lr)
    samples = run.sample(4, classes=[3])
    assert samples.shape[0] == 4 and np.isfinite(np.asarray(samples, dtype=np.float64)).all()


# --- a caption-conditioned UNet2DConditionModel (docs/math.md §12–13) ------------------------------------

TOKENIZER = (Path(__file__).parent / "data" / "tokenizer.json").resolve()
ENC = f"tiny:{TOKENIZER}"   # a tiny random encoder on MiniLM's tokenizer: token states of width 32
SHORT, LONG = "a thin one", "a thick wide seven leaning right, drawn slowly with a fine black pen on white paper"


def tiny_text_unet(width: int = 32, seed: int = 0, **extra):
    """A UNet2DConditionModel for digits' [1, 8, 8]: cross-attention to token states of ``width`` at 4×4."""
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=width, attention_head_dim=2, **extra)


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory) -> Path:
    """A v-prediction UNet2DConditionModel on squaredcos_cap_v2 betas, as a unet/ + scheduler/ pair (read-only)."""
    pytest.importorskip("tokenizers")
    return save(tmp_path_factory.mktemp("diffusers_text") / "teacher", tiny_text_unet(),
                make_scheduler("squaredcos_cap_v2", "v_prediction", "ddim"), layout="pair")


@pytest.fixture(scope="module")
def digits_text():
    return load_dataset("digits-text")


def test_a_text_unet_teacher_reads_the_encoders_token_states_and_their_mask(text_folder, digits_text):
    from fewstep.runs.build import prompt_cond
    from fewstep.text import text_encoder

    teacher = diffusers_teacher(text_folder, digits_text, text_encoder=ENC)
    unet = diffusers.UNet2DConditionModel.from_pretrained(text_folder / "unet").eval()
    encoder, config = text_encoder(ENC), TrainConfig(cond="text", text_encoder=ENC)
    z, t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0.3, 0.55, 0.9])
    cond = prompt_cond(config, [SHORT, LONG, ""])
    together = teacher(z, t, cond).x_hat
    for i, prompt in enumerate([SHORT, LONG, ""]):
        states, _ = encoder([prompt])  # alone: no padding, no mask needed
        alpha, sigma = teacher.schedule.alpha_sigma(t[i:i + 1])
        with torch.no_grad():
            v = unet(z[i:i + 1], t[i:i + 1] * 1000 - 1, encoder_hidden_states=states).sample
        # the short prompt is padded to the long one's length in the batch: the mask keeps it as it is alone
        assert torch.allclose(together[i:i + 1], alpha * z[i:i + 1] - sigma * v, atol=1e-5), prompt
    unconditional = teacher(z, t).x_hat  # no caption is the empty caption: the null of guidance
    assert torch.allclose(unconditional[2], together[2], atol=1e-6) and not torch.allclose(unconditional[0], together[0], atol=1e-3)


def test_a_guided_student_of_a_text_unet_is_its_own_unet_from_its_weights(tmp_path, cli, text_folder, digits_text):
    from fewstep.runs.build import build_denoiser, prompt_cond
    from fewstep.runs.teachers import TEACHER_SOURCES, SourceContext

    student = tmp_path / "student"
    code, _, err = cli("distill", "--teacher", f"diffusers:{text_folder}", "--data", "digits-text", "--text-encoder", ENC,
                       "--guidance", "2", "--student-steps", "4", "--iters", "2", "--batch", "8", "--eval-samples", "10",
                       "--out", student, "--no-progress")
    assert code == 0, err
    run = fewstep.load(student, device="cpu")
    assert run.config.cond == "text" and run.config.guidance == 2 and run.config.model.name == "diffusers-unet"
    assert run.config.model.kwargs["cross_attention_dim"] == 32 and run.config.schedule == read_folder(str(text_folder)).schedule.to_dict()
    assert type(run.denoiser.backbone.net.unet).__name__ == "UNet2DConditionModel"
    code, out, err = cli("sample", "--run", student, "--prompt", "a thick seven leaning right", "-n", "3", "--png", tmp_path / "s.png")
    assert code == 0 and "4 network calls per sample" in out, err
    # started from the teacher's weights: the freshly built student predicts what the teacher does
    config = student_settings(run.config, digits_text)
    teacher = TEACHER_SOURCES.get("diffusers")(str(text_folder), SourceContext(config, digits_text, torch.device("cpu")))
    fresh = build_denoiser(config, digits_text.shape)
    fresh.backbone.load_state_dict(teacher.weights, strict=True)
    z, t, cond = torch.randn(2, 1, 8, 8), torch.tensor([0.4, 0.8]), prompt_cond(config, [SHORT, LONG])
    with torch.no_grad():
        assert torch.allclose(fresh(z, t, cond).x_hat, teacher.denoiser(z, t, cond).x_hat, atol=1e-5)
    code, _, err = cli("export", "--run", student, "--out", tmp_path / "export")
    assert code == 2 and err.startswith("fewstep: error: --run: ") and "fewstep sample --prompt" in err, err
    assert not (tmp_path / "export").exists()


TEXT_REFUSALS = {
    # name: (the UNet's config changes, extra flags, flag named, words of the message)
    "encoder width": ({"cross_attention_dim": 48}, [], "--text-encoder", "width 48"),
    "projected width": ({"encoder_hid_dim": 48}, [], "--text-encoder", "width 48"),
    "class embeddings": ({"num_class_embeds": K + 1}, [], "--teacher", "captions alone"),
    "added embeddings": ({"addition_embed_type": "text_time"}, [], "--teacher", "addition_embed_type 'text_time'"),
    "image projection": ({"encoder_hid_dim_type": "image_proj"}, [], "--teacher", "encoder_hid_dim_type 'image_proj'"),
    "guidance embedding": ({"time_cond_proj_dim": 16}, [], "--teacher", "time_cond_proj_dim"),
    "class student": ({}, ["--cond", "class"], "--cond", "must be too"),
    "w-conditioned own UNet": ({}, ["--guidance-range", "1,3"], "--guidance-range", "no input for w"),
}


@pytest.mark.parametrize("case", TEXT_REFUSALS)
def test_text_unet_refusals_are_one_line_naming_the_flag(tmp_path, cli, text_folder, case):
    changes, flags, flag, words = TEXT_REFUSALS[case]
    folder = tmp_path / "teacher"
    shutil.copytree(text_folder, folder)
    edit(folder, "unet", **changes)
    code, _, err = cli("distill", "--teacher", f"diffusers:{folder}", "--data", "digits-text", "--text-encoder", ENC,
                       "--out", tmp_path / "run", "--iters", "1", "--eval-samples", "10", "--no-progress", *flags)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"fewstep: error: {flag}: ") and words in err, err
    assert not (tmp_path / "run").exists()


def test_fewstep_trains_a_caption_conditioned_diffusers_unet(tmp_path, cli):
    """--model diffusers-unet with captions is a UNet2DConditionModel laid out like fewstep's UNet."""
    pytest.importorskip("tokenizers")
    run_dir = tmp_path / "teacher"
    code, _, err = cli("train", "--model", "diffusers-unet", "--data", "digits-text", "--text-encoder", ENC, "--width", "8",
                       "--iters", "2", "--batch", "8", "--eval-samples", "10", "--out", run_dir, "--no-progress")
    assert code == 0, err
    run = fewstep.load(run_dir, device="cpu")
    unet = run.denoiser.backbone.net.unet
    assert type(unet).__name__ == "UNet2DConditionModel" and unet.config.cross_attention_dim == 32
    assert unet.config.down_block_types[-1] == "CrossAttnDownBlock2D" and unet.config.mid_block_type == "UNetMidBlock2DCrossAttn"
    samples = run.sample(2, prompt=[SHORT, LONG])
    assert samples.shape[0] == 2 and np.isfinite(np.asarray(samples, dtype=np.float64)).all()


def test_evaluate_takes_a_diffusers_teachers_training_free_samplers_as_the_baselines(tmp_path, cli, digits):
    """A student's card names diffusers:PATH: evaluate samples that teacher (clipped as CD saw it) with every
    training-free sampler at the student's NFE, found from the card or given as --teacher diffusers:PATH."""
    teacher = save(tmp_path / "teacher", tiny_unet(K + 1), make_scheduler("squaredcos_cap_v2", "epsilon", "ddim"), layout="pair")
    student = tmp_path / "student"
    code, _, err = cli("distill", "--teacher", f"diffusers:{teacher}", "--data", "digits", "--out", student, "--student-steps", "2",
                       "--iters", "2", "--batch", "8", "--eval-samples", "10", "--no-progress")
    assert code == 0, err
    from_card = tmp_path / "card.json"
    code, text, err = cli("evaluate", "--run", student, "-n", "8", "--seeds", "1", "--json", from_card)
    assert code == 0 and "no training-free baselines" not in err and "training-free samplers" in text, err
    report = json.loads(from_card.read_text())
    assert report["protocol"]["baselines_teacher"] == str(teacher)
    baselines = report["baselines"]
    assert {b["sampler"] for b in baselines} == {"ddim", "addim", "dpmpp2m", "unipc", "heun"}
    assert {b["nfe"] for b in baselines if b["sampler"] == "ddim"} == {2, 256} and all(b["training_free"] for b in baselines)
    # the same teacher, sampled directly: its 256-step DDIM row is the one evaluate reports
    run = fewstep.load(student, device="cpu")
    direct = diffusers_teacher(teacher, digits)  # clipped: an ε teacher on squaredcos_cap_v2
    assert isinstance(direct, Clipped)
    from fewstep.cli.evaluate_cmd import open_teacher

    as_run = open_teacher(run, Path(f"diffusers:{teacher}"), "cpu", digits)  # --teacher diffusers:PATH
    assert as_run.workdir == teacher and not as_run.is_student and as_run.nulls() == {"class": K}
    z = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = {"class": torch.tensor([0, 1, 2, 3])}
    t = torch.full((4,), 0.97)
    assert torch.equal(as_run.denoiser(z, t, cond).x_hat, direct(z, t, cond).x_hat)
