"""Classifier-free guidance as a denoiser wrapper against the closed form of a Gaussian mixture
(docs/math.md §10): the class-conditional denoiser of gaussians8 is one Gaussian's posterior mean, the
null class the mixture's, so the guided x̂ is known exactly at every w."""
from __future__ import annotations

import pytest
import torch

from fewstep.data.toys import GaussianMixtureDenoiser
from fewstep.guidance import Guided, null_like
from fewstep.param import Prediction
from fewstep.samplers import SAMPLERS
from fewstep.schedules import CosineSchedule, make_grid

K = 8
NULL = K  # the null class


class ConditionalMixture:
    """E[x | z_t, y]: component y's posterior mean for y < K, the mixture's for y = K (the null class).
    Counts calls and the batch sizes it was called with."""

    def __init__(self) -> None:
        angles = torch.arange(K) * (2 * torch.pi / K)
        self.means = 1.41 * torch.stack([angles.cos(), angles.sin()], 1)
        self.std = 0.0705
        self.schedule = CosineSchedule()
        self.mixture = GaussianMixtureDenoiser(self.schedule, self.means, self.std)
        self.batches: list[int] = []

    def __call__(self, z_t, t, cond=None) -> Prediction:
        self.batches.append(len(z_t))
        y = cond["class"]
        _, m, _ = self.mixture._posterior(z_t, t)                  # [B, K, D] per-component means
        x_mix = self.mixture(z_t, t).x_hat
        x_one = m[torch.arange(len(z_t)), y.clamp(max=K - 1)]
        x_hat = torch.where((y == NULL)[:, None], x_mix, x_one)
        alpha, sigma = self.schedule.alpha_sigma(t.expand(len(z_t)) if t.ndim == 0 else t)
        return Prediction(x_hat, (z_t - alpha[:, None] * x_hat) / sigma[:, None])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def setup():
    model = ConditionalMixture()
    z = torch.randn(64, 2, generator=gen(0))
    t = torch.rand(64, generator=gen(1)) * 0.9 + 0.05
    y = torch.randint(0, K, (64,), generator=gen(2))
    return model, z, t, {"class": y}


@pytest.mark.parametrize("w", [0.5, 2.0, 4.0])
def test_guided_x_hat_is_the_closed_form_in_one_batched_call(setup, w):
    model, z, t, cond = setup
    x_c = model(z, t, cond).x_hat
    x_u = model(z, t, {"class": torch.full_like(cond["class"], NULL)}).x_hat
    model.batches.clear()
    out = Guided(model, w, {"class": NULL})(z, t, cond)
    assert model.batches == [2 * len(z)]  # c and null together
    assert torch.allclose(out.x_hat, x_u + w * (x_c - x_u), atol=1e-6)
    alpha, sigma = model.schedule.alpha_sigma(t)
    assert torch.allclose(out.eps_hat, (z - alpha[:, None] * out.x_hat) / sigma[:, None], atol=1e-5)


def test_w1_and_w0_are_one_call_and_bit_identical(setup):
    model, z, t, cond = setup
    null = {"class": torch.full_like(cond["class"], NULL)}
    for w, same_as in ((1.0, cond), (0.0, null)):
        model.batches.clear()
        out = Guided(model, w, {"class": NULL})(z, t, cond)
        assert model.batches == [len(z)]
        reference = model(z, t, same_as)
        assert torch.equal(out.x_hat, reference.x_hat) and torch.equal(out.eps_hat, reference.eps_hat)


def test_guidance_interval_leaves_w_1_outside(setup):
    model, z, t, cond = setup
    guided = Guided(model, 3.0, {"class": NULL}, interval=(0.3, 0.7))
    out = guided(z, t, cond)
    x_c = model(z, t, cond).x_hat
    x_u = model(z, t, {"class": torch.full_like(cond["class"], NULL)}).x_hat
    inside = (t >= 0.3) & (t <= 0.7)
    assert bool(inside.any()) and bool((~inside).any())
    assert torch.allclose(out.x_hat[inside], (x_u + 3.0 * (x_c - x_u))[inside], atol=1e-6)
    assert torch.allclose(out.x_hat[~inside], x_c[~inside], atol=1e-6)
    model.batches.clear()
    outside_only = guided(z, torch.full_like(t, 0.9), cond)  # nothing inside: one conditional call, as unguided
    assert model.batches == [len(z)] and torch.equal(outside_only.x_hat, model(z, torch.full_like(t, 0.9), cond).x_hat)


def test_guidance_pushes_samples_outward_and_tightens_them():
    """DDIM on the guided mixture: w = 0 samples the mixture (each component about 1/8), w = 1 one
    component, larger w moves samples outward and shrinks their spread (docs/math.md §10's measurements)."""
    model = ConditionalMixture()
    y = torch.full((2000,), 3)
    z = torch.randn(2000, 2, generator=gen(3))
    ts = make_grid(model.schedule, 64, "t")
    ddim = SAMPLERS.get("ddim").fn
    radius, spread = {}, {}
    for w in (0.0, 1.0, 2.0, 4.0):
        x = ddim(Guided(model, w, {"class": NULL}), z, ts, cond={"class": y})
        if w == 0.0:
            share = ((x - model.means[3]).norm(dim=1) < 0.3).float().mean().item()
            assert 0.09 < share < 0.17, share
            continue
        radius[w], spread[w] = x.norm(dim=1).mean().item(), (x - x.mean(0)).norm(dim=1).pow(2).mean().div(2).sqrt().item()
    assert abs(radius[1.0] - 1.41) < 0.02 and abs(spread[1.0] - 0.0705) < 0.01, (radius, spread)
    assert radius[1.0] < radius[2.0] < radius[4.0] and spread[1.0] > spread[2.0] > spread[4.0], (radius, spread)


@pytest.mark.parametrize("name", ["ddim", "addim", "dpmpp2m", "unipc", "heun", "ancestral"])
def test_every_sampler_runs_guided(name):
    model = ConditionalMixture()
    z = torch.randn(32, 2, generator=gen(4))
    steps = 4
    entry = SAMPLERS.get(name)
    ts = make_grid(model.schedule, steps, "edm" if name == "heun" else "t")
    x = entry.fn(Guided(model, 2.0, {"class": NULL}), z, ts, cond={"class": torch.zeros(32, dtype=torch.long)},
                 generator=gen(5))
    assert x.shape == z.shape and bool(x.isfinite().all())
    assert model.batches and all(b == 64 for b in model.batches) and len(model.batches) == entry.nfe(steps)


def test_bad_guidance_inputs():
    model = ConditionalMixture()
    with pytest.raises(ValueError, match="interval"):
        Guided(model, 2.0, {"class": NULL}, interval=(0.8, 0.2))
    with pytest.raises(ValueError, match="needs a condition"):
        Guided(model, 2.0, {"class": NULL})(torch.zeros(2, 2), torch.tensor(0.5))
    with pytest.raises(ValueError, match="no null value"):
        null_like({"text": torch.zeros(2)}, {"class": NULL})


# --- conditioning pieces of the teacher (docs/math.md §10) ---------------------------------------

def test_a_missing_class_is_the_null_class():
    from fewstep.models.embeddings import TimeEmbedding

    emb = TimeEmbedding(16, 8, num_classes=10)
    t = torch.rand(5, generator=gen(6))
    assert torch.equal(emb(t, None), emb(t, {"class": torch.full((5,), 10)}))
    assert not torch.allclose(emb(t, None), emb(t, {"class": torch.zeros(5, dtype=torch.long)}))


def test_condition_dropout_replaces_by_the_null_with_probability_p():
    from fewstep.cond import drop_condition

    cond = {"class": torch.randint(0, 10, (20000,), generator=gen(7))}
    nulls = {"class": 10}
    assert drop_condition(cond, 0.0, nulls, gen(8)) is cond and drop_condition(None, 0.5, nulls, gen(8)) is None
    assert bool((drop_condition(cond, 1.0, nulls, gen(8))["class"] == 10).all())
    dropped = drop_condition(cond, 0.1, nulls, gen(8))["class"]
    kept = dropped != 10
    assert abs((~kept).float().mean().item() - 0.1) < 0.01
    assert torch.equal(dropped[kept], cond["class"][kept])
    assert torch.equal(dropped, drop_condition(cond, 0.1, nulls, gen(8))["class"])  # same generator, same draw


def test_diffusion_loss_with_all_conditions_dropped_is_the_null_conditioned_loss():
    from fewstep.models.mlp import MLP
    from fewstep.objectives.diffusion import DiffusionObjective
    from fewstep.param import Denoiser

    torch.manual_seed(0)
    denoiser = Denoiser(MLP(dim=2, width=16, depth=1, num_classes=3), CosineSchedule())
    x = torch.randn(32, 2, generator=gen(9))
    cond = {"class": torch.randint(0, 3, (32,), generator=gen(10))}
    null = {"class": torch.full((32,), 3)}
    dropped = DiffusionObjective(cond_dropout=1.0, nulls={"class": 3})(denoiser, x, cond, 0, gen(11)).loss
    as_null = DiffusionObjective()(denoiser, x, null, 0, gen(11)).loss
    as_given = DiffusionObjective()(denoiser, x, cond, 0, gen(11)).loss
    assert torch.equal(dropped, as_null) and not torch.equal(dropped, as_given)
    with pytest.raises(ValueError, match="null value"):
        DiffusionObjective(cond_dropout=0.1)


def test_a_class_conditional_teacher_trains_reopens_and_samples_by_class(tmp_path):
    """--cond class: the backbone gets the data's classes (+ the null), the loop feeds the labels, the run
    reopens from its folder and samples of different classes differ; without a class it samples the null."""
    import fewstep
    from fewstep.errors import UserError
    from fewstep.runs import train
    from fewstep.runs.config import TrainConfig, override, preset_for

    config = override(preset_for("digits", "images"), iters=30, batch=32, eval_samples=20, ckpt_every=1000, log_every=10,
                       model_width=32, cond="class", cond_dropout=0.2)
    train(config, tmp_path / "cond", progress=False)
    run = fewstep.load(tmp_path / "cond", device="cpu")
    assert run.denoiser.backbone.time.class_emb.num_embeddings == 11
    threes = run.sample_tensor(16, steps=4, seed=0, cond={"class": torch.full((16,), 3)})
    sevens = run.sample_tensor(16, steps=4, seed=0, cond={"class": torch.full((16,), 7)})
    assert not torch.allclose(threes, sevens)
    balanced = run.sample_tensor(20, steps=4, seed=0)  # no class given: every class in turn
    assert torch.equal(balanced, run.sample_tensor(20, steps=4, seed=0, cond={"class": torch.arange(20) % 10}))
    assert torch.equal(run.sample_tensor(16, steps=4, seed=0, classes=[3]), threes)
    # w = 1 is the conditional model bit for bit; w = 0 the null class; w = 2 neither.
    assert torch.equal(run.sample_tensor(16, steps=4, seed=0, classes=[3], guidance=1.0), threes)
    nulls = run.sample_tensor(16, steps=4, seed=0, cond={"class": torch.full((16,), 10)})
    assert torch.equal(run.sample_tensor(16, steps=4, seed=0, classes=[3], guidance=0.0), nulls)
    guided = run.sample_tensor(16, steps=4, seed=0, classes=[3], guidance=2.0)
    assert not torch.allclose(guided, threes) and not torch.allclose(guided, nulls)
    with pytest.raises(UserError, match="labelled data"):
        train(TrainConfig(data="moons", iters=2, cond="class"), tmp_path / "moons", progress=False)
    with pytest.raises(UserError, match="classes are 0…9"):
        run.sample_tensor(4, steps=2, classes=[10])


def test_sample_cli_writes_the_labels_asked_for_and_refuses_guidance_without_classes(tmp_path, cli, moons_run):
    import numpy as np

    from fewstep.runs import train
    from fewstep.runs.config import override, preset_for

    config = override(preset_for("digits", "images"), iters=20, batch=32, eval_samples=20, ckpt_every=1000, model_width=32, cond="class")
    train(config, tmp_path / "cond", progress=False)
    code, out, err = cli("sample", "--run", tmp_path / "cond", "--out", tmp_path / "s.npz", "-n", "6", "--steps", "2",
                         "--class", "2,5", "--guidance", "1.5")
    assert code == 0, err
    saved = np.load(tmp_path / "s.npz")
    assert saved["labels"].tolist() == [2, 5, 2, 5, 2, 5] and float(saved["guidance"]) == 1.5 and saved["samples"].shape[0] == 6
    code, out, err = cli("sample", "--run", moons_run, "--out", tmp_path / "m.npz", "-n", "4", "--guidance", "2")
    assert code == 2 and "--guidance" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "m.npz").exists()
    code, out, err = cli("sample", "--run", moons_run, "--out", tmp_path / "m.npz", "-n", "4", "--class", "1")
    assert code == 2 and "--class" in err and not (tmp_path / "m.npz").exists()


def test_cd_from_a_guided_teacher_takes_v_t_from_the_conditional_output(setup):
    """The teacher estimate is x̂_w, aDDIM's v_t = η‖x − x̂_c‖²/d from the conditional one ([MCM] App. A.1)."""
    from fewstep.objectives.multistep import MultistepObjective, segment_times
    from fewstep.param import expand_like
    from fewstep.samplers import addim_step

    model, z, _, cond = setup
    x = torch.randn(64, 2, generator=gen(12))
    times = segment_times(torch.randint(0, 2, (64,), generator=gen(13)), torch.randint(1, 5, (64,), generator=gen(14)), 2, 4)
    alpha, sigma = (expand_like(a, x) for a in model.schedule.alpha_sigma(times.t))
    z_t = alpha * x + sigma * z
    guided = Guided(model, 2.5, {"class": NULL})
    pred = guided(z_t, times.t, cond)
    z_s = MultistepObjective(guided, 2, iters=1, eta=0.75).teacher_step(model.schedule, x, z_t, times, cond)
    v_c = 0.75 * (pred.x_hat_cond - x).pow(2).mean(1)
    assert torch.allclose(z_s, addim_step(model.schedule, pred.x_hat, z_t, times.t, times.s, v_c), atol=1e-6)
    v_w = 0.75 * (pred.x_hat - x).pow(2).mean(1)
    assert not torch.allclose(z_s, addim_step(model.schedule, pred.x_hat, z_t, times.t, times.s, v_w), atol=1e-4)


def test_a_student_of_a_guided_teacher_samples_unguided_in_s_calls(tmp_path, cli):
    import fewstep
    from fewstep.errors import UserError
    from fewstep.runs import train
    from fewstep.runs.config import override, preset_for

    config = override(preset_for("digits", "images"), iters=20, batch=32, eval_samples=20, ckpt_every=1000, model_width=32, cond="class")
    train(config, tmp_path / "teacher", progress=False)
    code, _, err = cli("distill", "--teacher", tmp_path / "teacher", "--out", tmp_path / "student", "--student-steps", "2",
                       "--iters", "5", "--batch", "16", "--eval-samples", "10", "--guidance", "2", "--no-progress")
    assert code == 0, err
    student = fewstep.load(tmp_path / "student", device="cpu")
    assert student.config.objective == "cd" and student.card.hyper["guidance"] == 2.0 and student.num_classes == 10
    assert student.sample_tensor(8, classes=[4]).shape == (8, 1, 8, 8)
    with pytest.raises(UserError, match="distilled from its teacher guided at w = 2"):
        student.sample_tensor(8, classes=[4], guidance=2.0)
    code, _, err = cli("distill", "--teacher", tmp_path / "teacher", "--out", tmp_path / "ct", "--objective", "ct",
                       "--student-steps", "2", "--iters", "2", "--guidance", "2", "--no-progress")
    assert code == 2 and "--guidance" in err and not (tmp_path / "ct" / "checkpoint.json").exists()


def test_npz_labels_are_read_and_checked(tmp_path):
    import numpy as np

    from fewstep.data import load_dataset
    from fewstep.errors import UserError

    x = np.random.default_rng(0).normal(size=(60, 2))
    good = np.arange(60) % 3
    np.savez(tmp_path / "good.npz", x=x, labels=good)
    data = load_dataset(str(tmp_path / "good.npz"))
    assert data.num_classes == 3 and len(data.train_labels) + len(data.heldout_labels) == 60
    assert sorted(set(data.train_labels.tolist())) == [0, 1, 2]
    np.savez(tmp_path / "plain.npz", x=x)
    assert load_dataset(str(tmp_path / "plain.npz")).num_classes is None
    cases = {"short": (good[:-1], "one integer per example"), "float": (good.astype(float), "must be integers"),
             "negative": (good - 1, "≥ 0"), "gap": (np.where(good == 1, 2, good), "classes \\[1\\] have no examples")}
    for name, (labels, message) in cases.items():
        np.savez(tmp_path / f"{name}.npz", x=x, labels=labels)
        with pytest.raises(UserError, match=message) as info:
            load_dataset(str(tmp_path / f"{name}.npz"))
        assert info.value.arg == "data"


def test_class_sub_folders_are_labels_by_sorted_name_and_names_select_classes(tmp_path, cli):
    """torchvision's ImageFolder layout: one sub-folder per class, names sorted as strings; the name ↔ index
    map is saved with the run and `--class NAME` picks by name."""
    import numpy as np
    from PIL import Image

    import fewstep
    from fewstep.data import load_dataset
    from fewstep.errors import UserError

    rng = np.random.default_rng(0)
    for name, count in (("zebra", 6), ("ant", 5), ("cat", 7)):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "imgs" / name / f"{i}.png")
    data = load_dataset(str(tmp_path / "imgs"))
    assert data.class_names == ("ant", "cat", "zebra") and data.num_classes == 3
    counts = np.bincount(np.concatenate([data.train_labels.numpy(), data.heldout_labels.numpy()]))
    assert counts.tolist() == [5, 7, 6]
    code, _, err = cli("train", "--data", tmp_path / "imgs", "--out", tmp_path / "run", "--cond", "class", "--iters", "3",
                       "--batch", "8", "--width", "16", "--eval-samples", "8", "--no-progress")
    assert code == 0, err
    run = fewstep.load(tmp_path / "run", device="cpu")
    assert run.card.class_names == ("ant", "cat", "zebra")
    assert run.class_cond(4, ["zebra", "ant"])["class"].tolist() == [2, 0, 2, 0]
    with pytest.raises(UserError, match="unknown class 'dog'; its classes are ant, cat, zebra"):
        run.class_cond(2, ["dog"])
    code, _, err = cli("sample", "--run", tmp_path / "run", "--out", tmp_path / "s.npz", "-n", "3", "--steps", "2", "--class", "cat")
    assert code == 0, err and np.load(tmp_path / "s.npz")["labels"].tolist() == [1, 1, 1]
    (tmp_path / "imgs" / "empty").mkdir()
    with pytest.raises(UserError, match="'empty' has no PNG/JPEG images"):
        load_dataset(str(tmp_path / "imgs"))


def test_a_lone_array_named_labels_is_the_data(tmp_path):
    import numpy as np

    from fewstep.data import load_dataset

    np.savez(tmp_path / "only.npz", labels=np.random.default_rng(1).normal(size=(30, 2)))
    data = load_dataset(str(tmp_path / "only.npz"))
    assert data.num_classes is None and data.shape == (2,)
