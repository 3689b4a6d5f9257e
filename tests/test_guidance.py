"""Classifier-free guidance as a denoiser wrapper against the closed form of a Gaussian mixture
(docs/math.md §10): the class-conditional denoiser of gaussians8 is one Gaussian's posterior mean, the
null class the mixture's, so the guided x̂ is known exactly at every w."""
from __future__ import annotations

import functools

import pytest
import torch

from fewstep.data import ideal_denoiser, load_dataset
from fewstep.guidance import Guided, null_like
from fewstep.param import Prediction
from fewstep.samplers import SAMPLERS
from fewstep.schedules import CosineSchedule, make_grid

K = 8
NULL = K  # the null class


@functools.lru_cache(maxsize=1)
def gaussians8():
    return load_dataset("gaussians8")


class ConditionalMixture:
    """gaussians8's exact denoiser, class-conditional on its component label (model units): E[x | z_t, y]
    is component y's posterior mean for y < K, the mixture's for y = K (the null class). Records the
    batch size and the condition keys of every call."""

    def __init__(self) -> None:
        self.exact = ideal_denoiser(gaussians8(), CosineSchedule())
        self.schedule, self.means, self.std = self.exact.schedule, self.exact.means, self.exact.std
        self.batches: list[int] = []
        self.keys: list[set[str]] = []

    def __call__(self, z_t, t, cond=None) -> Prediction:
        self.batches.append(len(z_t))
        self.keys.append(set(cond or {}))
        return self.exact(z_t, t, cond)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def setup():
    model = ConditionalMixture()
    z = torch.randn(64, 2, generator=gen(0))
    t = torch.rand(64, generator=gen(1)) * 0.9 + 0.05
    y = torch.randint(0, K, (64,), generator=gen(2))
    return model, z, t, {"class": y}


def closed_form(model: ConditionalMixture, z, t, y, w):
    """x̂_u + w (m_y − Σ_j π_j m_j), written out: V = α²s² + σ², m_j = μ_j + α s² (z − α μ_j)/V,
    π_j ∝ exp(−‖z − α μ_j‖²/2V) (equal weights), the null class's x̂_u = Σ_j π_j m_j (docs/math.md §8, §10)."""
    alpha, sigma = (a.double()[:, None, None] for a in model.schedule.alpha_sigma(t))
    mu, s2 = model.means.double()[None], model.std**2
    var = alpha**2 * s2 + sigma**2
    diff = z.double()[:, None] - alpha * mu
    m = mu + alpha * s2 * diff / var
    pi = torch.softmax(-diff.pow(2).sum(-1) / (2 * var[..., 0]), dim=1)
    x_u = (pi[..., None] * m).sum(1)
    w = torch.as_tensor(w, dtype=torch.float64).reshape(-1, 1)
    return x_u + w * (m[torch.arange(len(z)), y] - x_u)


@pytest.mark.parametrize("w", [0.5, 2.0, 4.0])
def test_guided_x_hat_is_the_closed_form_in_one_batched_call(setup, w):
    model, z, t, cond = setup
    model.batches.clear()
    out = Guided(model, w, {"class": NULL})(z, t, cond)
    assert model.batches == [2 * len(z)]  # c and null together
    assert torch.allclose(out.x_hat.double(), closed_form(model, z, t, cond["class"], w), atol=1e-5)
    alpha, sigma = model.schedule.alpha_sigma(t)
    assert torch.allclose(out.eps_hat, (z - alpha[:, None] * out.x_hat) / sigma[:, None], atol=1e-5)


def test_each_example_its_own_w_read_from_the_condition(setup):
    """w = None: every example guided at its own cond["guidance"] (a w-conditioned student's teacher), which
    the wrapped model never sees."""
    model, z, t, cond = setup
    w = torch.rand(len(z), generator=gen(20)) * 4
    model.batches.clear(), model.keys.clear()
    out = Guided(model, None, {"class": NULL})(z, t, {**cond, "guidance": w})
    assert model.batches == [2 * len(z)] and model.keys == [{"class"}]
    assert torch.allclose(out.x_hat.double(), closed_form(model, z, t, cond["class"], w), atol=1e-5)


def test_gaussians8_emits_its_component_as_label():
    data = gaussians8()
    means = ConditionalMixture().means
    nearest = torch.cdist(data.train, means).argmin(1)
    assert data.num_classes == K and (nearest == data.train_labels).float().mean() > 0.999
    assert torch.bincount(data.train_labels, minlength=K).min() > 0.11 * len(data.train)


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


def test_256_step_ddim_on_the_guided_mixture():
    """docs/math.md §10 on gaussians8, 4,000 samples asked for component 3: w = 0 samples the mixture (12.5% ±
    2% per component); w = 1 the component (≥ 99% there, mean within 0.01, std within 5% of (μ_3, s));
    w = 4 stays there, pushed outward and tighter (measured: radius 1.567, std 0.030)."""
    model = ConditionalMixture()
    k, n = 3, 4000
    z = torch.randn(n, 2, generator=gen(3))
    ts = make_grid(model.schedule, 256, "t")
    ddim = SAMPLERS.get("ddim").fn
    samples = {w: ddim(Guided(model, w, {"class": NULL}), z, ts, cond={"class": torch.full((n,), k)}) for w in (0.0, 1.0, 4.0)}
    component = {w: torch.cdist(x, model.means).argmin(1) for w, x in samples.items()}
    shares = torch.bincount(component[0.0], minlength=K).double() / n
    assert bool(((shares - 1 / K).abs() < 0.02).all()), shares
    mu, s = model.means[k], model.std
    for w in (1.0, 4.0):
        assert (component[w] == k).double().mean() >= 0.99, w
    x1, x4 = samples[1.0], samples[4.0]
    assert (x1.mean(0) - mu).norm() < 0.01 and abs(x1.std(0).mean() / s - 1) < 0.05, (x1.mean(0), x1.std(0))
    assert x4.mean(0).norm() > mu.norm() + 0.1 and x4.std(0).mean() < 0.6 * s, (x4.mean(0), x4.std(0))


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
    assert code == 0, err
    assert np.load(tmp_path / "s.npz")["labels"].tolist() == [1, 1, 1]
    (tmp_path / "imgs" / "empty").mkdir()
    with pytest.raises(UserError, match="'empty' has no PNG/JPEG images"):
        load_dataset(str(tmp_path / "imgs"))


def test_a_lone_array_named_labels_is_the_data(tmp_path):
    import numpy as np

    from fewstep.data import load_dataset

    np.savez(tmp_path / "only.npz", labels=np.random.default_rng(1).normal(size=(30, 2)))
    data = load_dataset(str(tmp_path / "only.npz"))
    assert data.num_classes is None and data.shape == (2,)


# --- w-conditioned students, conditional CT, evaluation, defaults (docs/math.md §10) -----------------

def test_the_embedding_of_w_starts_at_zero_so_a_student_starts_as_its_teacher():
    from fewstep.models.mlp import MLP
    from fewstep.runs.train import with_own_guidance_embedding

    torch.manual_seed(0)
    teacher = MLP(dim=4, width=16, depth=1, num_classes=3)
    student = MLP(dim=4, width=16, depth=1, num_classes=3, guidance=True)
    student.load_state_dict(with_own_guidance_embedding(student, teacher.state_dict()))
    z, t, y = torch.randn(6, 4, generator=gen(21)), torch.rand(6, generator=gen(22)), torch.arange(6) % 3
    reference = teacher(z, t, {"class": y})
    for w in (0.0, 1.5, 4.0):
        assert torch.equal(student(z, t, {"class": y, "guidance": torch.full((6,), w)}), reference)
    torch.nn.init.normal_(student.time.guidance_mlp[-1].weight)  # once it has learnt something, w matters
    at = lambda w: student(z, t, {"class": y, "guidance": torch.full((6,), w)})  # noqa: E731
    assert not torch.allclose(at(1.5), at(4.0)) and torch.equal(student(z, t, {"class": y}), at(1.0))


def test_guidance_range_draws_each_examples_w_uniformly_and_passes_the_rest_through():
    from fewstep.objectives import GuidanceRange, LossOutput

    seen = []

    class Inner:
        name, sampler = "cd", None

        def __call__(self, denoiser, x, cond, step, generator):
            seen.append(cond)
            return LossOutput(x.sum(), x[:, 0], x[:, 0])

    x = torch.zeros(20000, 2)
    GuidanceRange(Inner(), 1.0, 4.0)(None, x, {"class": torch.arange(20000) % 8}, 0, gen(23))
    w = seen[0]["guidance"]
    assert w.shape == (20000,) and float(w.min()) >= 1.0 and float(w.max()) <= 4.0
    assert abs(float(w.mean()) - 2.5) < 0.03 and abs(float(w.std()) - 3 / 12**0.5) < 0.03  # U[1, 4]
    assert torch.equal(seen[0]["class"], torch.arange(20000) % 8)
    with pytest.raises(ValueError, match="lo < hi"):
        GuidanceRange(Inner(), 4.0, 1.0)


def test_condition_dropout_of_a_student_without_teacher():
    from fewstep.objectives import ConditionDropout, LossOutput

    seen = []

    class Inner:
        name, sampler = "ct", None

        def __call__(self, denoiser, x, cond, step, generator):
            seen.append(cond["class"])
            return LossOutput(x.sum(), x[:, 0], x[:, 0])

    cond = {"class": torch.arange(10000) % 10}
    ConditionDropout(Inner(), 0.2, {"class": 10})(None, torch.zeros(10000, 2), cond, 0, gen(24))
    ConditionDropout(Inner(), 0.0, {"class": 10})(None, torch.zeros(10000, 2), cond, 0, gen(24))
    dropped = seen[0] == 10
    assert abs(float(dropped.double().mean()) - 0.2) < 0.015 and torch.equal(seen[0][~dropped], cond["class"][~dropped])
    assert torch.equal(seen[1], cond["class"])


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    """A tiny class-conditional digits teacher, trained with the default --cond (auto: labelled data)."""
    from fewstep.cli.main import main

    root = tmp_path_factory.mktemp("digits_cond")
    code = main(["train", "--data", "digits", "--out", str(root / "teacher"), "--iters", "20", "--batch", "32", "--width", "32",
                 "--eval-samples", "16", "--no-progress"])
    assert code == 0
    return root / "teacher"


def test_labelled_data_trains_a_conditional_teacher_by_default(tmp_path, cli, digits_teacher, moons_run):
    import fewstep

    assert fewstep.load(digits_teacher, device="cpu").config.cond == "class"
    assert fewstep.load(moons_run, device="cpu").config.cond == "none"  # no labels: auto is unconditional
    code, _, err = cli("train", "--data", "digits", "--cond", "none", "--out", tmp_path / "plain", "--iters", "2", "--batch", "8",
                       "--width", "16", "--eval-samples", "8", "--no-progress")
    assert code == 0, err
    plain = fewstep.load(tmp_path / "plain", device="cpu")
    assert plain.config.cond == "none" and plain.num_classes is None and plain.denoiser.backbone.time.class_emb is None


def test_a_w_conditioned_student_serves_its_range_with_s_calls(tmp_path, cli, digits_teacher):
    import numpy as np

    import fewstep

    code, _, err = cli("distill", "--teacher", digits_teacher, "--out", tmp_path / "ws", "--student-steps", "2", "--iters", "5",
                       "--batch", "16", "--eval-samples", "10", "--guidance-range", "1,4", "--no-progress")
    assert code == 0, err
    student = fewstep.load(tmp_path / "ws", device="cpu")
    assert student.config.objective == "cd" and student.guidance_range == (1.0, 4.0)
    assert student.nfe(guidance=3.0) == 2 and student.nfe() == 2
    code, out, err = cli("sample", "--run", tmp_path / "ws", "--out", tmp_path / "s.npz", "-n", "4", "--class", "7", "--guidance", "3")
    assert code == 0, err
    saved = np.load(tmp_path / "s.npz")
    assert int(saved["nfe"]) == 2 and float(saved["guidance"]) == 3.0 and saved["labels"].tolist() == [7] * 4
    code, _, err = cli("sample", "--run", tmp_path / "ws", "--out", tmp_path / "t.npz", "-n", "4", "--guidance", "5")
    assert code == 2 and "distilled for w in [1, 4], got 5" in err and not (tmp_path / "t.npz").exists()
    for bad in (["--guidance-range", "4,1"], ["--guidance-range", "1,4", "--guidance", "2"], ["--guidance-range", "x"]):
        code, _, err = cli("distill", "--teacher", digits_teacher, "--out", tmp_path / "bad", "--student-steps", "2", "--iters", "2",
                           "--no-progress", *bad)
        assert code == 2 and "guidance" in err and len(err.strip().splitlines()) == 1, (bad, err)
        assert not (tmp_path / "bad" / "checkpoint.json").exists()


def test_evaluate_sweeps_w_with_guided_calls_counted_and_class_accuracy(tmp_path, cli, digits_teacher):
    import json

    code, out, err = cli("evaluate", "--run", digits_teacher, "--steps", "3", "--guidance", "0,1,2", "-n", "40", "--seeds", "1",
                         "--json", tmp_path / "e.json")
    assert code == 0, err
    rows = json.loads((tmp_path / "e.json").read_text())["rows"]
    assert [(r["w"], r["guided"], r["nfe"]) for r in rows] == [(0.0, False, 3), (1.0, False, 3), (2.0, True, 6)]
    assert all(0.0 <= r["class_accuracy"] <= 1.0 and r["class_accuracy_reference"] > 0.9 for r in rows)
    assert "class accuracy (real:" in out and "2 (guided)" in out
    code, _, err = cli("evaluate", "--run", digits_teacher, "--steps", "4", "--guidance", "2", "--guidance-interval", "0.3,0.6",
                       "-n", "20", "--seeds", "1", "--json", tmp_path / "i.json")
    assert code == 0, err
    row = json.loads((tmp_path / "i.json").read_text())["rows"][0]
    assert 4 < row["nfe"] < 8 and row["interval"] == [0.3, 0.6]  # guided (2 calls) only inside the interval


def test_class_accuracy_of_real_data_is_the_reference():
    from fewstep.metrics import class_accuracy

    data = load_dataset("digits")
    right = class_accuracy(data, data.heldout, data.heldout_labels)
    wrong = class_accuracy(data, data.heldout, (data.heldout_labels + 1) % 10)
    assert right["class_accuracy"] == right["class_accuracy_reference"] > 0.95 and wrong["class_accuracy"] < 0.05
    with pytest.raises(ValueError, match="labels of shape"):
        class_accuracy(data, data.heldout, data.heldout_labels[:-1])


@pytest.mark.parametrize("case,message", [
    ("short", "one integer per example"), ("float", "must be integers"), ("negative", "≥ 0"), ("gap", "have no examples")])
def test_bad_labels_through_the_cli(tmp_path, cli, case, message):
    import numpy as np

    x = np.random.default_rng(0).normal(size=(60, 2))
    good = np.arange(60) % 3
    labels = {"short": good[:-1], "float": good + 0.5, "negative": good - 1, "gap": np.where(good == 1, 2, good)}[case]
    np.savez(tmp_path / "d.npz", x=x, labels=labels)
    code, _, err = cli("train", "--data", tmp_path / "d.npz", "--out", tmp_path / "run", "--iters", "2", "--no-progress")
    assert code == 2 and message in err and "--data" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_an_unknown_class_through_the_cli(tmp_path, cli, digits_teacher):
    code, _, err = cli("sample", "--run", digits_teacher, "--out", tmp_path / "s.npz", "-n", "2", "--class", "ten")
    assert code == 2 and "--class" in err and "unknown class 'ten'" in err and not (tmp_path / "s.npz").exists()
    code, _, err = cli("sample", "--run", digits_teacher, "--out", tmp_path / "s.npz", "-n", "2", "--class", "12")
    assert code == 2 and "classes are 0…9" in err


def test_a_student_of_a_teacher_guided_inside_an_interval(tmp_path, cli, digits_teacher):
    """--guidance-interval: the teacher the student learns is guided only for t inside (Guided's interval)."""
    import fewstep
    from fewstep.runs.objective import make_objective

    code, _, err = cli("distill", "--teacher", digits_teacher, "--out", tmp_path / "s", "--student-steps", "2", "--iters", "2",
                       "--batch", "8", "--eval-samples", "10", "--guidance", "2", "--guidance-interval", "0.25,0.75", "--no-progress")
    assert code == 0, err
    student = fewstep.load(tmp_path / "s", device="cpu")
    assert student.card.hyper["guidance_interval"] == [0.25, 0.75] and student.nfe() == 2
    composed = make_objective(student.config, load_dataset("digits"), torch.device("cpu"), student.denoiser)
    assert composed.objective.teacher.w == 2.0 and composed.objective.teacher.interval == (0.25, 0.75)
    code, _, err = cli("distill", "--teacher", digits_teacher, "--out", tmp_path / "bad", "--student-steps", "2", "--iters", "2",
                       "--guidance-interval", "0.25,0.75", "--no-progress")
    assert code == 2 and "--guidance-interval" in err and not (tmp_path / "bad" / "checkpoint.json").exists()
