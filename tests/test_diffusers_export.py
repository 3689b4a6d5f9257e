"""``fewstep export`` (docs/math.md §12): a student with the diffusers-unet backbone written as a folder that
stock diffusers loads, and sampled there it gives fewstep's samples on the same noise.

The stock side (``stock_samples``, the pipelines) uses torch and diffusers only. The round-trip students have
a small random output layer and predict x: x̂ is then small and every sample stays inside [−1, 1], so
DDIMPipeline's clamp to [0, 1] hides nothing (a random v- or ε-model saturates pixels, and saturated pixels
agree whatever the sampler). v-prediction students, whose x̂ ≈ α z then leaves [−1, 1], are compared on the
raw output only. Trailing timestep T − 1 − kT/S is fewstep's t = 1 − k/S; one index off is a different
sampler, and the comparison must see it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import snapshot

import fewstep
from fewstep.data import load_dataset
from fewstep.errors import UserError
from fewstep.param import Denoiser
from fewstep.runs import ModelConfig, TrainConfig, train
from fewstep.runs.build import build_backbone
from fewstep.runs.card import RunCard
from fewstep.runs.diffusers_unet import table
from fewstep.runs.export import check_exportable, export
from fewstep.samplers import SamplerSpec
from fewstep.schedules import schedule_from_dict

diffusers = pytest.importorskip("diffusers")
from test_diffusers_teacher import make_scheduler, save, tiny_unet  # after importorskip: it needs diffusers

K = 10
RTOL = 1e-5
TINY = ModelConfig("diffusers-unet", width=4, mults=(1, 2), blocks=1, attn_res=0, dropout=0.0)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module", autouse=True)
def hf_modules(tmp_path_factory):
    """diffusers copies a folder's pipeline.py into its modules cache: keep that out of the home folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("diffusers.utils.dynamic_modules_utils.HF_MODULES_CACHE", str(tmp_path_factory.mktemp("hf_modules")))
        yield


def tiny_denoiser(config: TrainConfig, dataset) -> Denoiser:
    """The tiny UNet of ``config`` with its output layer small noise."""
    torch.manual_seed(0)
    backbone = build_backbone(config, dataset.shape, dataset.num_classes)
    torch.nn.init.normal_(backbone.unet.conv_out.weight, std=0.02)
    torch.nn.init.zeros_(backbone.unet.conv_out.bias)
    return Denoiser(backbone, schedule_from_dict(config.schedule), prediction=config.prediction)  # type: ignore[arg-type]


def student_run(folder: Path, dataset, steps: int, prediction: str = "x", cond: str = "none", **fields) -> Path:
    """A student run (ct unless ``fields`` say otherwise) of :func:`tiny_denoiser` after one step at a learning
    rate of 1e-9, so that its weights are the module's; a cd student is its own teacher."""
    config = TrainConfig(**{**dict(data="digits", objective="ct", init="none", student_steps=steps, cond=cond, prediction=prediction,
                                   model=TINY, schedule=table(), iters=1, batch=8, lr=1e-9, warmup=1, eval_samples=8), **fields})
    student = tiny_denoiser(config, dataset)
    teacher = tiny_denoiser(config, dataset).requires_grad_(False) if config.objective == "cd" else None
    return train(config, folder, dataset=dataset, student=student, teacher=teacher, progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits):
    """Student runs and their exports by (S, prediction, cond), made once per module and read-only."""
    made: dict[tuple, tuple[Path, Path]] = {}

    def get(steps: int, prediction: str = "x", cond: str = "none") -> tuple[Path, Path]:
        key = (steps, prediction, cond)
        if key not in made:
            root = tmp_path_factory.mktemp(f"s{steps}{prediction}{cond}")
            run = student_run(root / "run", digits, steps, prediction, cond)
            made[key] = run, export(run, root / "export")
        return made[key]

    return get


def stock_samples(folder: Path, noise: torch.Tensor, steps: int, labels=None, shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """The export sampled by stock diffusers: UNet2DModel + DDIMScheduler.step (eta = 0) over set_timesteps(steps);
    ``shift`` moves the index given to the UNet and to the scheduler (an off-by-one mapping)."""
    unet = diffusers.UNet2DModel.from_pretrained(folder / "unet").eval()
    scheduler = diffusers.DDIMScheduler.from_pretrained(folder / "scheduler")
    scheduler.set_timesteps(steps)
    x = noise
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t + shift[0], class_labels=labels).sample, t + shift[1], x, eta=0.0).prev_sample
    return x


def noise(n: int, seed: int) -> torch.Tensor:
    """The initial noise fewstep.sampling.generate draws for ``n`` ≤ 64 digits at ``seed`` (one batch)."""
    return torch.randn((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def unit_range(x: torch.Tensor) -> np.ndarray:
    """fewstep's images in [−1, 1] as DDIMPipeline's [0, 1] NHWC arrays."""
    return ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()


# --- the round trip --------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction", ["x", "v"])
@pytest.mark.parametrize("steps", [2, 4, 8])
def test_stock_unet_and_ddim_scheduler_give_fewsteps_samples_and_one_index_off_does_not(runs, steps, prediction):
    run, folder = runs(steps, prediction)
    ours = fewstep.load(run, device="cpu").sample_tensor(16, seed=5)
    assert relative(stock_samples(folder, noise(16, 5), steps), ours) <= RTOL
    for shift in ((-1, 0), (-1, -1), (0, -1)):  # the UNet's index, both, the scheduler's
        assert relative(stock_samples(folder, noise(16, 5), steps, shift=shift), ours) > 10 * RTOL, shift


@pytest.mark.parametrize("steps", [2, 4, 8])
def test_ddim_pipeline_gives_fewsteps_samples_in_unit_range(runs, steps):
    run, folder = runs(steps)
    images = diffusers.DDIMPipeline.from_pretrained(folder)(batch_size=16, num_inference_steps=steps, output_type="np",
                                                           generator=torch.Generator().manual_seed(5)).images
    ours = unit_range(fewstep.load(run, device="cpu").sample_tensor(16, seed=5))
    assert np.abs(images - ours).max() <= RTOL
    assert ((images == 0) | (images == 1)).mean() < 0.05  # nearly nothing clamped: the comparison sees every pixel
    info = json.loads((folder / "fewstep.json").read_text())
    assert info["timesteps"] == [1023 - k * 1024 // steps for k in range(steps)] and info["student_steps"] == steps


def test_the_scheduler_is_ddim_on_the_runs_table(runs):
    run, folder = runs(4)
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "DDIMScheduler" and config["beta_schedule"] == "squaredcos_cap_v2"
    assert (config["num_train_timesteps"], config["timestep_spacing"], config["set_alpha_to_one"], config["clip_sample"],
            config["prediction_type"], config["steps_offset"]) == (1024, "trailing", True, False, "sample", 0)
    scheduler = diffusers.DDIMScheduler.from_pretrained(folder / "scheduler")
    schedule = fewstep.load(run, device="cpu").denoiser.schedule
    assert torch.equal(scheduler.betas, schedule.betas.float())
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "DDIMPipeline" and not (folder / "pipeline.py").exists()
    assert "num_inference_steps=4" in (folder / "README.md").read_text()


def test_a_class_conditional_student_exports_a_pipeline_that_takes_labels(runs):
    run, folder = runs(4, "x", "class")
    info = json.loads((folder / "fewstep.json").read_text())
    assert (info["num_classes"], info["null_class"], info["class_index"]) == (K, K, list(range(K)))
    pipe = diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)  # pipeline.py, named by model_index.json
    assert type(pipe).__name__ == "FewstepClassPipeline" and pipe.config.student_steps == 4
    labels = torch.tensor([0, 3, 9, 5, 5, 1])
    images = pipe(class_labels=labels, generator=torch.Generator().manual_seed(2), output_type="np").images
    ours = fewstep.load(run, device="cpu").sample_tensor(6, seed=2, cond={"class": labels})
    assert np.abs(images - unit_range(ours)).max() <= RTOL
    assert relative(stock_samples(folder, noise(6, 2), 4, labels=labels), ours) <= RTOL
    other = pipe(class_labels=labels.flip(0), generator=torch.Generator().manual_seed(2), output_type="np").images
    assert np.abs(other - images).max() > 10 * RTOL  # the labels reach the UNet


def test_a_student_distilled_at_a_fixed_w_exports_with_its_w(tmp_path, digits):
    run = student_run(tmp_path / "run", digits, 2, cond="class", objective="cd", guidance=2.0)
    folder = export(run, tmp_path / "export")
    assert json.loads((folder / "fewstep.json").read_text())["guidance"] == 2.0
    assert "guided at w = 2 (it samples without guidance)" in (folder / "README.md").read_text()


def test_the_exported_unet_is_the_runs_ema_unet(runs):
    run, folder = runs(2)
    theirs = diffusers.UNet2DModel.from_pretrained(folder / "unet").state_dict()
    ours = fewstep.load(run, device="cpu").denoiser.backbone.unet.state_dict()
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)


# --- the CLI: a diffusers-unet teacher, its student, export ----------------------------------------

def test_a_diffusers_unet_teacher_trains_on_the_1024_table_and_its_student_is_the_same_unet(tmp_path, cli):
    common = ["--data", "digits", "--cond", "none", "--batch", "8", "--eval-samples", "8", "--no-progress"]
    code, _, err = cli("train", "--model", "diffusers-unet", "--width", "4", "--iters", "2", "--out", tmp_path / "teacher", *common)
    assert code == 0, err
    teacher = fewstep.load(tmp_path / "teacher", device="cpu")
    assert teacher.config.schedule == table("squaredcos_cap_v2", 1024) and teacher.config.prediction == "v"
    assert type(teacher.denoiser.backbone.unet).__name__ == "UNet2DModel"
    code, _, err = cli("distill", "--teacher", tmp_path / "teacher", "--objective", "cd", "--student-steps", "2", "--iters", "1",
                       "--lr", "1e-12", "--out", tmp_path / "student", *common[4:])
    assert code == 0, err
    student = fewstep.load(tmp_path / "student", device="cpu")
    assert student.config.model == teacher.config.model and student.config.init == "teacher"
    for (name, ours), theirs in zip(student.denoiser.state_dict().items(), teacher.denoiser.state_dict().values()):
        assert torch.allclose(ours, theirs, atol=1e-6), name  # one step at lr 1e-12 from the teacher's weights
    code, out, err = cli("export", "--run", tmp_path / "student", "--out", tmp_path / "export")
    assert code == 0 and "exported" in out, err
    assert relative(stock_samples(tmp_path / "export", noise(8, 0), 2), student.sample_tensor(8, seed=0)) <= RTOL


@pytest.mark.parametrize("beta, prediction", [("linear", "v_prediction"), ("squaredcos_cap_v2", "epsilon")])
def test_a_diffusers_teachers_student_is_its_own_unet_from_its_weights_and_exports(tmp_path, cli, beta, prediction):
    """Of a v or an ε teacher, the student predicts v from the teacher's weights (an ε teacher's output read as v̂,
    docs/math.md §12), and exports as v_prediction without clip_sample: its own sampler clips nothing."""
    unet = tiny_unet()
    folder = save(tmp_path / "teacher", unet, make_scheduler(beta, prediction, "ddim", steps=1000))
    code, _, err = cli("distill", "--teacher", f"diffusers:{folder}", "--data", "digits", "--out", tmp_path / "student",
                       "--student-steps", "4", "--iters", "1", "--lr", "1e-12", "--batch", "8", "--eval-samples", "8", "--no-progress")
    assert code == 0, err
    student = fewstep.load(tmp_path / "student", device="cpu")
    assert student.config.model.name == "diffusers-unet" and student.config.init == "teacher" and student.config.prediction == "v"
    assert student.card.teacher_clip is (prediction == "epsilon")
    assert student.config.model.kwargs == {k: v for k, v in json.loads((folder / "unet" / "config.json").read_text()).items()
                                           if not k.startswith("_")}
    for name, theirs in unet.state_dict().items():
        assert torch.allclose(student.denoiser.backbone.unet.state_dict()[name], theirs, atol=1e-6), name
    code, _, err = cli("export", "--run", tmp_path / "student", "--out", tmp_path / "export")
    assert code == 0, err
    config = json.loads((tmp_path / "export" / "scheduler" / "scheduler_config.json").read_text())
    assert (config["beta_schedule"], config["num_train_timesteps"], config["trained_betas"]) == (beta, 1000, None)
    assert (config["prediction_type"], config["clip_sample"], config["thresholding"]) == ("v_prediction", False, False)
    assert json.loads((tmp_path / "export" / "fewstep.json").read_text())["run"]["teacher_clip"] is (prediction == "epsilon")
    assert ("clipped to [−1, 1]" in (tmp_path / "export" / "README.md").read_text()) is (prediction == "epsilon")
    assert relative(stock_samples(tmp_path / "export", noise(8, 1), 4), student.sample_tensor(8, seed=1)) <= RTOL


# --- refusals --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def refused_runs(tmp_path_factory, digits):
    """Runs export refuses: S = 3 of T = 1024, fewstep's own MLP, a diffusion teacher."""
    root = tmp_path_factory.mktemp("refused")
    student_run(root / "s3", digits, 3)
    mlp = TrainConfig(data="digits", objective="ct", init="none", cond="none", model=ModelConfig("mlp", width=8, depth=1),
                      iters=1, batch=8, eval_samples=8)
    train(mlp, root / "mlp", dataset=digits, progress=False)
    teacher = TrainConfig(data="digits", cond="none", model=TINY, schedule=table(), iters=1, batch=8, eval_samples=8)
    train(teacher, root / "teacher", dataset=digits, progress=False)
    (root / "a file").write_text("x")
    (root / "full").mkdir()
    (root / "full" / "mine.txt").write_text("keep me")
    return root


EXPORT_REFUSALS = {
    # name: (--run, --out, extra flags, flag named, words of the message)
    "S does not divide T": ("s3", "out", [], "--run", "S = 3 does not divide T = 1024"),
    "fewstep's mlp": ("mlp", "out", [], "--run", "fewstep's own mlp, not a UNet2DModel"),
    "a teacher": ("teacher", "out", [], "--run", "a diffusion teacher"),
    "no run": ("missing", "out", [], "--run", "missing"),
    "out is a file": ("s3", "a file", [], "--out", "is a file"),
    "out's folder is a file": ("s3", "a file/out", [], "--out", "is a file"),
    "out is not empty": ("s3", "full", [], "--out", "already exists and is not empty"),
    "overwrite what is no export": ("s3", "full", ["--overwrite"], "--out", "something other than a fewstep export"),
}


@pytest.mark.parametrize("case", EXPORT_REFUSALS)
def test_bad_input_is_one_line_naming_the_flag_and_changes_nothing(refused_runs, cli, case):
    run, out, flags, flag, words = EXPORT_REFUSALS[case]
    before = snapshot(refused_runs)
    code, _, err = cli("export", "--run", refused_runs / run, "--out", refused_runs / out, *flags)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"fewstep: error: {flag}: ") and words in err, err
    assert snapshot(refused_runs) == before


def test_s_that_does_not_divide_t_lists_those_that_do(refused_runs):
    with pytest.raises(UserError, match="1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024$"):
        export(refused_runs / "s3", refused_runs / "out")


def card(objective: str = "cd", sampler: str = "consistency") -> RunCard:
    from fewstep.data import Normaliser

    return RunCard("digits", (1, 8, 8), Normaliser("images", (0.0,), (1.0,)), K, objective, SamplerSpec(sampler, 4))


@pytest.mark.parametrize("config, run_card, words", [
    (TrainConfig(objective="cd", model=ModelConfig("mlp"), cond="class", guidance_range=(1.0, 4.0)), card(),
     "a UNet2DModel has no input for it"),
    (TrainConfig(objective="cd", model=ModelConfig("unet")), card(), "fewstep's own unet, not a UNet2DModel"),
    (TrainConfig(objective="cd", model=ModelConfig("my_net:Net")), card(), "the user class my_net:Net"),
    (TrainConfig(objective="ect", model=TINY, schedule=table()), card("ect", "ect"), "re-noises"),
])
def test_what_has_no_stock_diffusers_form_is_refused_saying_why(config, run_card, words):
    with pytest.raises(UserError, match="^run: ") as info:
        check_exportable(config, run_card)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_overwrite_replaces_an_earlier_export_and_leaves_nothing_beside_it(tmp_path, runs, cli):
    (run2, _), (run4, _) = runs(2), runs(4)
    assert cli("export", "--run", run2, "--out", tmp_path / "export")[0] == 0
    code, _, err = cli("export", "--run", run4, "--out", tmp_path / "export", "--overwrite")
    assert code == 0, err
    assert json.loads((tmp_path / "export" / "fewstep.json").read_text())["student_steps"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


@pytest.mark.parametrize("config, words", [
    (TrainConfig(data="digits", model=TINY), "knows time only as the index of a T-step table"),
    (TrainConfig(data="digits", model=TINY, schedule=table(), cond="class", guidance_range=(1.0, 4.0)), "no input for w"),
    (TrainConfig(data="digits", model=ModelConfig("diffusers-unet", width=4, mults=(1, 2, 2, 2)), schedule=table()),
     "multiples of 8 and at least 16"),
])
def test_the_diffusers_unet_backbone_refuses_in_one_line(digits, config, words):
    with pytest.raises(UserError) as info:
        build_backbone(config, digits.shape, digits.num_classes)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("teacher, data, words", [
    (None, "moons", "diffusers-unet takes images"),
    ("moons", None, "knows time only as the index of a T-step table"),  # a cosine teacher's student
])
def test_a_diffusers_unet_that_cannot_be_built_is_one_line_and_no_run(tmp_path, cli, moons_run, teacher, data, words):
    args = ["distill", "--teacher", moons_run, "--objective", "cd"] if teacher else ["train", "--data", data]
    code, _, err = cli(*args, "--model", "diffusers-unet", "--iters", "1", "--out", tmp_path / "run", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("fewstep: error: --model: ") and words in err, err
    assert not (tmp_path / "run").exists()


def test_export_help_names_what_it_writes(cli):
    code, out, _ = cli("export", "--help")
    assert code == 0 and "DDIMScheduler" in out and "--overwrite" in out
