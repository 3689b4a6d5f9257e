"""The composition layer (fewstep.runs): sampler specs, run cards, teacher re-timing, runs made from
Python with a user's backbone, and run folders as untrusted input."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import GaussianDenoiser, snapshot

import fewstep
from fewstep.cond import CondSpec
from fewstep.data import Normaliser, load_dataset
from fewstep.errors import UserError
from fewstep.param import Denoiser, Retimed
from fewstep.runs import load, train
from fewstep.runs.card import RunCard
from fewstep.runs.config import TrainConfig
from fewstep.runs.teachers import on_schedule
from fewstep.samplers import SAMPLERS, SamplerSpec, format_sampler, parse_sampler
from fewstep.schedules import CosineSchedule, InterpolatedSchedule, logsnr_range

TINY = dict(data="moons", iters=20, batch=64, eval_samples=64, ckpt_every=1000)


# --- SamplerSpec: parsed and printed in one place ------------------------------------------------

@pytest.mark.parametrize("text, options", [
    ("ddim", {}), ("addim", {}), ("addim:data_free", {"variance": "data_free"}),
    ("addim:table:xhat", {"variance": "table", "final": "x_hat"}), ("heun", {}), ("ect", {}),
    ("addim:table:xhat:eta=0.25", {"variance": "table", "final": "x_hat", "eta": 0.25}), ("dpmpp2m:t", {"grid": "t"}),
    ("heun:t", {"grid": "t"}), ("unipc", {}),
])
def test_sampler_spec_round_trips_its_string(text, options):
    spec = parse_sampler(text, steps=2)
    assert spec == SamplerSpec(text.split(":")[0], 2, options)
    assert format_sampler(spec) == text and str(spec) == text


def test_sampler_spec_prints_omitted_options_as_their_defaults():
    assert format_sampler(SamplerSpec("addim", 4, {"final": "x_hat"})) == "addim:table:xhat"


@pytest.mark.parametrize("text, message", [
    ("dpm", "unknown sampler 'dpm'; expected one of"), ("addim:exact", "variance is one of table, data_free"),
    ("addim:table:xhat:more", "at most 2 ':' options"), ("consistency:table", "at most 0 ':' options"),
    ("ddim:table", "grid is one of t, logsnr"), ("addim:eta=0.2:xhat", "name=value options come after"),
    ("addim:eta=x", "eta must be a number"), ("addim:eta=-1", "finite number ≥ 0"), ("ddim:eta=1", "ddim has no option 'eta'"),
])
def test_bad_sampler_specs_name_the_argument(text, message):
    with pytest.raises(UserError, match=message) as info:
        parse_sampler(text)
    assert info.value.arg == "sampler"


def test_sampler_registry_knows_steps_and_calls():
    assert SamplerSpec("heun", 4).nfe() == 7 and SamplerSpec("ddim", 4).nfe() == 4
    with pytest.raises(UserError, match="at most 2 steps"):
        SamplerSpec("ect", 3).check()
    assert set(SAMPLERS) >= {"ddim", "addim", "heun", "ancestral", "consistency", "ect"}


# --- the run card ------------------------------------------------------------------------------

def test_run_card_reads_the_flat_extra_of_older_runs():
    legacy = {"data": "moons", "data_shape": [2], "normaliser": {"kind": "points", "shift": [0.5, 0.2], "scale": [0.9, 0.5]},
              "num_classes": None, "teacher": "runs/moons", "teacher_step": 6000, "teacher_data": "moons",
              "P_mean": -1.3, "u_mid": 0.4, "sigma_data": 0.25, "objective": "ect", "log_window": {"loss": [0.1]}}
    card = RunCard.from_dict(legacy, "ect")
    assert card.sampler == SamplerSpec("ect", 2, {"u_mid": 0.4}) and card.teacher_step == 6000
    assert card.hyper == {"P_mean": -1.3, "u_mid": 0.4, "sigma_data": 0.25}
    cd = RunCard.from_dict({**legacy, "student_steps": 4}, "cd")
    assert cd.sampler == SamplerSpec("consistency", 4) and cd.is_student
    again = RunCard.from_dict(card.to_dict(), "ect")
    assert again == card


def test_run_card_refuses_a_malformed_extra():
    with pytest.raises(UserError, match="run card .* incomplete or malformed"):
        RunCard.from_dict({"data": "moons"}, "diffusion")
    card = RunCard("moons", (2,), Normaliser("points", (0.0, 0.0), (1.0, 1.0)))
    with pytest.raises(UserError, match="data shape"):
        RunCard.from_dict({**card.to_dict(), "data_shape": [0]}, "diffusion")
    with pytest.raises(UserError, match="data shape"):
        RunCard.from_dict({**card.to_dict(), "data_shape": [1, 0, 8]}, "diffusion")
    # A size of 1 is a shape like any other: one-channel images, one-dimensional points.
    for shape in ([1, 8, 8], [1]):
        assert RunCard.from_dict({**card.to_dict(), "data_shape": shape}, "diffusion").data_shape == tuple(shape)


# --- teacher and student schedules (docs/math.md §12) -------------------------------------------

def test_retimed_teacher_equals_the_teacher_at_the_same_log_snr():
    mu = torch.tensor([1.0, -0.5], dtype=torch.float64)
    teacher = GaussianDenoiser(CosineSchedule(logsnr_min=-20.0, logsnr_max=20.0), mu, 0.5)
    student = CosineSchedule(shift=-2.0)  # log-SNR in [−17, 13]
    retimed = on_schedule(teacher, student)
    assert isinstance(retimed, Retimed) and retimed.schedule is student
    exact = GaussianDenoiser(student, mu, 0.5)  # the same data, evaluated on the student's own schedule
    t = torch.linspace(0.02, 0.98, 25)
    z = torch.randn(25, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(retimed(z, t).x_hat, exact(z, t).x_hat, rtol=1e-4, atol=1e-5)
    assert on_schedule(exact, student) is exact  # the same schedule is never wrapped


def test_a_teacher_whose_range_does_not_cover_the_student_is_refused():
    mu = torch.zeros(2, dtype=torch.float64)
    narrow = GaussianDenoiser(CosineSchedule(logsnr_min=-10.0, logsnr_max=10.0), mu, 0.5)
    assert logsnr_range(narrow.schedule) == pytest.approx((-10.0, 10.0), abs=1e-4)
    with pytest.raises(UserError, match="does not cover the student's") as info:
        on_schedule(narrow, CosineSchedule())
    assert info.value.arg == "teacher"
    # One end outside is enough to refuse; inside (to within the tolerance) at both ends is retimed.
    for low, high in ((-12.0, 8.0), (-8.0, 12.0)):
        with pytest.raises(UserError, match="does not cover the student's"):
            on_schedule(narrow, CosineSchedule(logsnr_min=low, logsnr_max=high))
    assert isinstance(on_schedule(narrow, CosineSchedule(logsnr_min=-8.0, logsnr_max=8.0)), Retimed)


def test_a_python_teacher_gives_its_weights_only_when_asked_and_only_if_it_has_a_backbone():
    from conftest import mlp_denoiser

    from fewstep.runs.teachers import python_teacher

    net = mlp_denoiser(2)
    assert python_teacher(net, "none").weights is None
    weights = python_teacher(net, "teacher").weights
    assert weights.keys() == net.backbone.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in net.backbone.state_dict().items())
    exact = GaussianDenoiser(CosineSchedule(), torch.zeros(2), 0.5)  # a closed form: no weights at all
    assert python_teacher(exact, "teacher").weights is None and python_teacher(exact, "none").weights is None


def test_the_ideal_teacher_has_no_weights_to_start_from():
    from fewstep.runs.teachers import TEACHER_SOURCES, SourceContext

    data = load_dataset("gaussians8")
    ctx = lambda init: SourceContext(TrainConfig(data="gaussians8", objective="cd", teacher="ideal", init=init), data,  # noqa: E731
                                     torch.device("cpu"))
    teacher = TEACHER_SOURCES.get("ideal")("", ctx("none"))
    assert teacher.weights is None and teacher.card == {"teacher": "ideal"}
    with pytest.raises(UserError, match="ideal teacher has no weights"):
        TEACHER_SOURCES.get("ideal")("", ctx("teacher"))


def test_distillation_from_a_teacher_on_another_schedule_calls_it_at_the_matching_times(tmp_path):
    """CD of a student on the cosine schedule from a teacher on a shifted one: with N = 8 and S = 2 the
    student's times are j/8, and every teacher call is at the teacher's time of the same log-SNR."""
    other = CosineSchedule(logsnr_min=-20.0, logsnr_max=20.0, shift=-3.0)
    calls: list[torch.Tensor] = []

    class Recording(GaussianDenoiser):
        def __call__(self, z_t, t, cond=None):
            calls.append(torch.as_tensor(t).clone())
            return super().__call__(z_t, t, cond)

    teacher = Recording(other, torch.zeros(2), 1.0)
    config = TrainConfig(objective="cd", init="none", student_steps=2, n0=8, n1=8, **TINY)
    train(config, tmp_path / "cd", teacher=teacher, progress=False)
    grid = torch.arange(1, 9) / 8
    expected = other.t_from_logsnr(CosineSchedule().logsnr(grid))
    seen = torch.cat(calls)
    distance = (seen[:, None] - expected[None, :]).abs().min(1).values
    assert float(distance.max()) < 1e-6
    assert float((seen[:, None] - grid[None, :]).abs().min(1).values.max()) > 1e-3  # not the student's own times
    assert load(tmp_path / "cd").card.teacher == "python object"


# --- runs made from Python reopen from their folders ------------------------------------------

def test_a_user_backbone_built_by_import_path_reopens_from_its_folder(tmp_path):
    net = fewstep.backbone("tiny_backbone:TinyNet", dim=2, width=16)
    student = Denoiser(net, InterpolatedSchedule(res=8), prediction="eps")
    train(TrainConfig(**TINY), tmp_path / "run", student=student, progress=False)
    run = load(tmp_path / "run")
    assert run.config.model.name == "tiny_backbone:TinyNet" and run.config.model.kwargs == {"dim": 2, "width": 16}
    assert run.config.prediction == "eps" and run.config.schedule == student.schedule.to_dict()
    assert type(run.denoiser.backbone).__name__ == "TinyNet" and run.denoiser.prediction == "eps"
    z = torch.randn(8, 2)
    with torch.no_grad():
        assert torch.equal(run.denoiser(z, 0.5).x_hat, run.denoiser(z, 0.5).x_hat)
    assert run.sample(16).shape == (16, 2)


def test_a_backbone_fewstep_cannot_rebuild_reopens_with_an_instance(tmp_path):
    class Local(torch.nn.Module):  # defined in a function: not importable
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, z, t, cond=None):
            return self.lin(torch.cat([z, t[:, None]], 1))

    train(TrainConfig(**TINY), tmp_path / "run", student=Denoiser(Local(), CosineSchedule()), progress=False)
    with pytest.raises(UserError, match=r"cannot be rebuilt by fewstep .* fewstep.load\(run, backbone=\.\.\.\)"):
        load(tmp_path / "run")
    run = load(tmp_path / "run", backbone=Local())
    assert run.sample(8).shape == (8, 2)
    with pytest.raises(UserError, match="do not fit the backbone"):
        load(tmp_path / "run", backbone=torch.nn.Linear(5, 2))


def test_a_recipe_that_does_not_rebuild_the_module_is_refused_before_training(tmp_path):
    from tiny_backbone import ClaimsKwargs

    with pytest.raises(UserError, match="does not rebuild the given backbone"):
        train(TrainConfig(**TINY), tmp_path / "run", student=Denoiser(ClaimsKwargs(), CosineSchedule()), progress=False)
    assert not (tmp_path / "run").exists()


# --- run folders are untrusted input --------------------------------------------------------------

def test_weights_named_outside_the_run_folder_are_refused(moons_run, tmp_path, cli):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(moons_run, run)
    meta = json.loads((run / "checkpoint.json").read_text())
    shutil.copy(run / meta["weights"], tmp_path / "outside.safetensors")
    meta["weights"] = "../outside.safetensors"
    (run / "checkpoint.json").write_text(json.dumps(meta))
    before = snapshot(tmp_path)
    code, _, err = cli("sample", "--run", run, "--out", tmp_path / "s.npz")
    assert code == 2 and err.count("\n") == 1 and "--run:" in err and "inside the run folder" in err
    assert snapshot(tmp_path) == before


def test_a_config_edited_to_another_width_is_one_line(moons_run, tmp_path, cli):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(moons_run, run)
    config = json.loads((run / "config.json").read_text())
    config["model"]["width"] *= 2
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = cli("sample", "--run", run, "--out", tmp_path / "s.npz")
    assert code == 2 and err.count("\n") == 1 and "do not fit the backbone" in err


def test_library_errors_name_arguments_and_the_cli_names_flags(moons_run, tmp_path, cli):
    with pytest.raises(UserError, match="^steps: ") as info:
        load(moons_run).sample(4, steps=3, sampler="ect")
    assert info.value.for_flags({}) .startswith("--steps: ")
    assert UserError("expected more", arg="n").for_flags({"n": "-n"}) == "-n: expected more"
    code, _, err = cli("report", str(tmp_path / "missing"), "--out", tmp_path / "r")
    assert code == 2 and err.startswith("fewstep: error: RUN: ")


def test_cond_spec_gives_the_null_condition():
    spec = CondSpec({"class": 10})
    null = spec.null(3)
    assert spec.keys == ("class",) and torch.equal(null["class"], torch.full((3,), 10))
    assert CondSpec().null(3) is None


def test_teacher_folder_of_other_data_shape_is_refused(moons_run, tmp_path):
    digits = load_dataset("digits")
    config = TrainConfig(data="digits", objective="cd", teacher=str(moons_run), init="none", iters=1)
    with pytest.raises(UserError, match=r"trained on examples of shape \[2\]"):
        train(config, tmp_path / "s", dataset=digits, progress=False)


def test_a_teacher_from_a_run_folder_is_frozen(moons_run):
    """Its parameters take no gradient: a forward through it, even outside no_grad, builds no graph."""
    from fewstep.runs.teachers import SourceContext, run_folder

    config = TrainConfig(objective="cd", teacher=str(moons_run), init="teacher", **TINY)
    teacher = run_folder(str(moons_run), SourceContext(config, load_dataset("moons"), torch.device("cpu")))
    assert teacher.weights is not None and not any(p.requires_grad for p in teacher.denoiser.parameters())
    with torch.enable_grad():
        pred = teacher.denoiser(torch.randn(4, 2), torch.full((4,), 0.5))
    assert not pred.x_hat.requires_grad and pred.x_hat.grad_fn is None


def test_a_student_starts_from_its_teachers_weights_on_the_same_schedule_and_parameterisation_only():
    """Same schedule and prediction, or an ε teacher read as a v student (REPARAMETERISED); nothing else."""
    from fewstep.runs.teachers import Teacher, check_init

    def check(teacher_schedule, teacher_prediction, student_schedule, student_prediction, weights=True):
        teacher = Denoiser(torch.nn.Identity(), teacher_schedule, prediction=teacher_prediction)
        check_init(Teacher(teacher, {"w": torch.zeros(1)} if weights else None),
                   Denoiser(torch.nn.Identity(), student_schedule, prediction=student_prediction))

    same, other = CosineSchedule(), CosineSchedule(shift=-1.0)
    for prediction in ("v", "eps", "x"):
        check(same, prediction, CosineSchedule(), prediction)
    check(same, "eps", CosineSchedule(), "v")
    for case in [(same, "v", same, "eps"), (same, "x", same, "v"), (same, "v", other, "v"), (same, "eps", other, "v")]:
        with pytest.raises(UserError, match="^init: the teacher's weights belong to schedule"):
            check(*case)
    check(same, "v", other, "eps", weights=False)  # no weights to start from: nothing to check


def test_the_optimiser_state_is_read_when_asked_and_round_trips(tmp_path):
    from fewstep.train.checkpoint import Checkpoint, read_checkpoint, save_checkpoint

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    net(torch.ones(4, 3)).square().sum().backward()
    opt.step()
    weights = lambda: {k: v.clone() for k, v in net.state_dict().items()}  # noqa: E731
    save_checkpoint(tmp_path / "a", Checkpoint({"c": 1}, 1, weights(), weights(), opt.state_dict()))
    assert read_checkpoint(tmp_path / "a").optimizer is None  # not asked: not read
    back = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.5)
    back.load_state_dict(read_checkpoint(tmp_path / "a", with_optimizer=True).optimizer)
    assert back.param_groups[0]["lr"] == 0.1
    for i in (0, 1):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(torch.as_tensor(back.state_dict()["state"][i][key]), torch.as_tensor(opt.state_dict()["state"][i][key]))
    # A checkpoint saved without one has none to read.
    save_checkpoint(tmp_path / "b", Checkpoint({"c": 1}, 1, weights(), weights()))
    assert read_checkpoint(tmp_path / "b", with_optimizer=True).optimizer is None


def test_remove_run_removes_fewsteps_files_only(tmp_path):
    from fewstep.train.checkpoint import RUN_FILES, remove_run

    for name in (*RUN_FILES, "weights-00000004.safetensors", "weights-00000008.safetensors", "notes.txt"):
        (tmp_path / name).write_text("x")
    remove_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    remove_run(tmp_path)  # nothing left to remove is fine


# --- review follow-ups: defaults kept, error paths that once raised raw -------------------------------

def test_a_foreign_sampler_on_a_run_defaults_to_the_runs_own_step_count(moons_run, tmp_path):
    config = TrainConfig(objective="cd", teacher=str(moons_run), init="none", student_steps=3, **TINY)
    train(config, tmp_path / "s", progress=False)
    student = load(tmp_path / "s")
    assert student.spec("ddim").steps == 3 and student.spec().steps == 3
    assert load(moons_run).spec("addim").steps == 64


def test_generate_resolves_addim_named_variance_without_a_run():
    from fewstep.sampling import generate
    from fewstep.samplers import data_free_variance

    d = GaussianDenoiser(CosineSchedule(), torch.zeros(2), 0.5)
    named = generate(d, 16, (2,), "addim:data_free", steps=3)
    given = generate(d, 16, (2,), "addim", steps=3, variance=data_free_variance(d.schedule))
    assert torch.equal(named, given)


def test_teacher_weights_are_not_loaded_into_a_student_on_another_schedule(tmp_path):
    from conftest import mlp_denoiser

    teacher = mlp_denoiser(2)
    student = Denoiser(torch.nn.Identity(), CosineSchedule(shift=-1.0))
    with pytest.raises(UserError, match="^init: the teacher's weights belong to schedule"):
        train(TrainConfig(objective="cd", init="teacher", **TINY), tmp_path / "s", teacher=teacher, student=student, progress=False)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda meta: meta.update(step="x"), "malformed"),
    (lambda meta: meta.update(rng="x"), "malformed"),
    (lambda meta: meta["extra"].update(sampler={"name": "ddim", "steps": 4, "options": [1, 2]}), "run card"),
    (lambda meta: meta["extra"].update(variance_table={"ts": [0.1, 0.2], "values": [1.0]}), "variance table"),
    (lambda meta: meta["extra"]["normaliser"].update(kind="audio"), "normaliser"),
])
def test_tampered_checkpoint_fields_are_one_line(moons_run, tmp_path, cli, edit, message):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(moons_run, run)
    meta = json.loads((run / "checkpoint.json").read_text())
    edit(meta)
    (run / "checkpoint.json").write_text(json.dumps(meta))
    code, _, err = cli("sample", "--run", run, "--out", tmp_path / "s.npz")
    assert code == 2 and err.count("\n") == 1 and err.startswith("fewstep: error: --run: ") and message in err, err


def test_a_bad_schedule_in_config_json_is_one_line(moons_run, tmp_path, cli):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(moons_run, run)
    config = json.loads((run / "config.json").read_text())
    config["schedule"] = {"shift": 1.0}
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = cli("sample", "--run", run, "--out", tmp_path / "s.npz")
    assert code == 2 and err.count("\n") == 1 and "--run: cannot read" in err and "config.json" in err, err


def test_resume_of_a_checkpoint_edited_to_another_width_is_one_line(moons_run, tmp_path, cli):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(moons_run, run)
    config = json.loads((run / "config.json").read_text())
    config["model"]["width"] = 8
    (run / "config.json").write_text(json.dumps(config))
    before = snapshot(tmp_path)
    code, _, err = cli("train", "--resume", "--out", run, "--iters", "40", "--no-progress")
    assert code == 2 and err.count("\n") == 1 and err.startswith("fewstep: error: --resume: "), err
    assert snapshot(tmp_path) == before


def test_out_below_an_existing_file_is_one_line(moons_run, tmp_path, cli):
    (tmp_path / "file").write_text("x")
    before = snapshot(tmp_path)
    code, _, err = cli("sample", "--run", moons_run, "--out", tmp_path / "file" / "s.npz")
    assert code == 2 and err.count("\n") == 1 and "--out: " in err and "is a file" in err, err
    code, _, err = cli("train", "--data", "moons", "--out", tmp_path / "file" / "run", "--iters", "1", "--no-progress")
    assert code == 2 and err.count("\n") == 1 and "--out: " in err and "is a file" in err, err
    assert snapshot(tmp_path) == before


def test_evaluate_checks_each_sampler_at_the_steps_asked(moons_run, tmp_path, cli):
    code, out, err = cli("evaluate", "--run", moons_run, "--sampler", "ect", "--steps", "1,2", "-n", "50", "--seeds", "1")
    assert code == 0, err
    code, _, err = cli("evaluate", "--run", moons_run, "--sampler", "ect", "--steps", "3", "-n", "50", "--seeds", "1")
    assert code == 2 and "--steps: the ect sampler takes at most 2 steps, got 3" in err


def test_weights_changed_after_their_checksum_was_written_are_refused(moons_run, tmp_path, cli):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(moons_run, run)
    (weights,) = run.glob("weights-*.safetensors")
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of the last tensor: still a loadable file, but not the one checkpointed
    weights.write_bytes(bytes(data))
    code, _, err = cli("sample", "--run", run, "--out", tmp_path / "s.npz")
    assert code == 2 and err.count("\n") == 1 and "does not match checkpoint.json" in err, err


def test_a_card_of_single_channel_images_reads_back():
    card = RunCard("digits", (1, 8, 8), Normaliser("images", (127.5,), (127.5,)))
    assert RunCard.from_dict(card.to_dict(), "diffusion").data_shape == (1, 8, 8)


def test_a_teacher_from_a_run_folder_is_frozen(moons_run):
    from fewstep.runs.teachers import SourceContext, run_folder

    config = TrainConfig(objective="cd", teacher=str(moons_run), init="teacher")
    teacher = run_folder(str(moons_run), SourceContext(config, load_dataset("moons"), torch.device("cpu")))
    assert not any(p.requires_grad for p in teacher.denoiser.parameters()) and not teacher.denoiser.training
    assert teacher.weights is not None and teacher.card["teacher_step"] == 30


def test_addim_eta_from_a_spec_string_reaches_the_table(moons_run):
    """``addim:table:eta=0`` is DDIM on a run with a table; plain ``addim`` follows the step count's
    measured defaults (docs/math.md §4), which are DDIM from 17 steps on."""
    run = load(moons_run, device="cpu")
    assert run.card.variance_table is not None
    ddim = run.sample_tensor(64, sampler="ddim", steps=3, seed=1)
    assert torch.allclose(run.sample_tensor(64, sampler="addim:table:eta=0", steps=3, seed=1), ddim, atol=1e-5)
    same = lambda a, b, steps=3: torch.equal(run.sample_tensor(64, sampler=a, steps=steps, seed=1),
                                             run.sample_tensor(64, sampler=b, steps=steps, seed=1))
    # Plain addim takes the measured defaults for its step count; a named choice without η keeps its own.
    assert same("addim", "addim:table:xhat:eta=0.5") and same("addim", "addim:table:addim:eta=1", steps=1)
    assert same("addim:table", "addim:table:xhat:eta=0.75") and same("addim:data_free", "addim:data_free:xhat:eta=0.1")
    assert torch.allclose(run.sample_tensor(64, sampler="addim", steps=64, seed=1),
                          run.sample_tensor(64, sampler="ddim", steps=64, seed=1), atol=1e-5)
    assert not torch.allclose(run.sample_tensor(64, sampler="addim:table:eta=2", steps=3, seed=1), ddim, atol=1e-3)


@pytest.mark.parametrize("score, floor, objective", [
    (0.036, 0.033, "cd"),       # the moons teacher: 1.08× its floor over 3 seeds
    (0.046, 0.0275, "cd"),      # checkerboard: 1.67×
    (43.1, 11.0, "ct"),         # the digits teacher: 3.9×
    (27.4, 11.0, "cd"),         # 2.49×: still near
    (27.6, 11.0, "ct"),
    (0.05, 0.0, "cd"),          # no usable floor: the classic
    (float("nan"), 1.0, "cd"),
])
def test_default_objective_follows_the_teachers_distance_from_its_floor(score, floor, objective):
    from fewstep.runs.teachers import objective_for

    chosen, why = objective_for(score, floor)
    assert chosen == objective and why


def test_same_settings_ignores_student_fields_only_for_teachers():
    from fewstep.runs.config import same_settings, student_config

    teacher = TrainConfig(iters=10)
    assert same_settings(teacher, dataclasses.replace(teacher, n0=64, n1=1280, device="cuda"))
    assert not same_settings(teacher, dataclasses.replace(teacher, lr=2e-3))
    student = student_config(teacher, "t", "cd")
    assert not same_settings(student, dataclasses.replace(student, n0=64))
    assert not same_settings(teacher, dataclasses.replace(teacher, objective="ct"))


def test_ensure_trained_reuses_a_teacher_whatever_its_student_fields(tmp_path):
    from fewstep.runs import ensure_trained

    config = TrainConfig(data="moons", iters=20, batch=64, eval_samples=50, ckpt_every=1000, log_every=10,
                         model=TrainConfig().model.__class__(width=16, depth=1))
    assert ensure_trained(config, tmp_path / "t")[0] == "trained"
    assert ensure_trained(dataclasses.replace(config, n0=64, n1=1280), tmp_path / "t")[0] == "reused"
    with pytest.raises(UserError, match="other settings"):
        ensure_trained(dataclasses.replace(config, lr=5e-4), tmp_path / "t")
