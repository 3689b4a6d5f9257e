"""Metrics against closed forms: SWD of shifted clouds, Fréchet distance of Gaussians; the classifier cache."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fewstep.data import Dataset, load_dataset
from fewstep.metrics import aggregate, evaluate_samples, floor_sample, noise_floor
from fewstep.metrics import classifier as classifier_module
from fewstep.metrics.classifier import TrainRecipe, _load, cache_dir, cache_stem, get_classifier
from fewstep.metrics.fid import frechet_distance, frechet_from_features, gaussian_moments
from fewstep.metrics.histogram import class_histogram, total_variation
from fewstep.metrics.memorisation import memorisation
from fewstep.metrics.swd import random_directions, sliced_wasserstein, wasserstein2_1d


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def moons() -> Dataset:
    return load_dataset("moons")


@pytest.fixture(scope="module")
def trained_cache(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Train the digits classifier once into a cache shared by this module: (root, sha256)."""
    root = tmp_path_factory.mktemp("fewstep-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWSTEP_CACHE", str(root))
        clf = get_classifier(digits)
    assert clf.source == "trained"
    return root, clf.checksum


def gaussian_cloud(n: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x[:, 0] += shift
    return x


# --- SWD -------------------------------------------------------------------------------------------

def test_swd_zero_for_identical_sets_symmetric_and_deterministic() -> None:
    x, y = gaussian_cloud(500, 3, 0), gaussian_cloud(700, 3, 1, shift=0.5)
    assert sliced_wasserstein(x, x) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(x, y) == pytest.approx(sliced_wasserstein(y, x), rel=1e-12)
    assert sliced_wasserstein(x, y) == sliced_wasserstein(x.clone(), y.clone())
    assert sliced_wasserstein(x, y, seed=1) != sliced_wasserstein(x, y, seed=0)


def test_w2_1d_exact_for_unequal_sizes() -> None:
    # F⁻¹ = 0 on (0, ½], 1 on (½, 1]; G⁻¹ = 0, ½, 1 on thirds: they differ by ½ on (⅓, ⅔], so W2² = ¼·⅓.
    u = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    v = torch.tensor([[0.0], [0.5], [1.0]], dtype=torch.float64)
    assert float(wasserstein2_1d(u, v)) == pytest.approx(math.sqrt(1 / 12), rel=1e-12)
    assert float(wasserstein2_1d(u, u.repeat(3, 1))) == pytest.approx(0.0, abs=1e-12)  # same law


def test_swd_of_a_shift_is_mean_abs_projection() -> None:
    # Every projection of x + δ is the projection of x moved by θ·δ, so W2_θ = |θ·δ| exactly.
    x = gaussian_cloud(400, 5, 0)
    delta = torch.tensor([0.3, -1.0, 0.0, 2.0, 0.5], dtype=torch.float64)
    expected = float((random_directions(5, 256, seed=0) @ delta).abs().mean())
    assert sliced_wasserstein(x, x + delta) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("dim", "e_abs_cos"), [(2, 2 / math.pi), (3, 0.5)])
def test_swd_of_shifted_gaussians_matches_closed_form(dim: int, e_abs_cos: float) -> None:
    # N(0, I) vs N(δ e₁, I): W2_θ = |δ cos θ₁|, so SWD → δ E|θ₁|, with E|θ₁| = 2/π on S¹ and ½ on S².
    # 512 directions leave a Monte Carlo error of about 2.5 % (1σ); N ≠ M exercises the merged grid.
    delta = 3.0
    x, y = gaussian_cloud(2000, dim, 0), gaussian_cloud(3000, dim, 1, shift=delta)
    assert sliced_wasserstein(x, y, num_projections=512) == pytest.approx(delta * e_abs_cos, rel=0.06)
    assert sliced_wasserstein(x, gaussian_cloud(3000, dim, 2)) < 0.1  # same law: only sampling noise


def test_swd_flattens_images() -> None:
    a = torch.rand(50, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    assert sliced_wasserstein(a, a + 0.1) == pytest.approx(sliced_wasserstein(a.flatten(1), a.flatten(1) + 0.1))


# --- Fréchet distance ----------------------------------------------------------------------------

def test_frechet_distance_of_diagonal_gaussians() -> None:
    # Diagonal Σ: tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^{1/2}) = Σ_i (√a_i − √b_i)².
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_a_rotated_pair_and_a_singular_pair() -> None:
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0]
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([4.0, 1.0, 1.0, 9.0])
    s1, s2 = rot @ np.diag(a) @ rot.T, rot @ np.diag(b) @ rot.T  # commuting, so the diagonal formula holds
    assert frechet_distance(np.zeros(4), s1, np.zeros(4), s2) == pytest.approx(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-6)
    singular = np.diag([1.0, 0.0, 0.0, 2.0])
    assert frechet_distance(np.zeros(4), singular, np.zeros(4), singular) == pytest.approx(0.0, abs=1e-4)


def test_frechet_from_features_estimates_the_closed_form() -> None:
    gen = np.random.default_rng(0)
    a = gen.normal(size=(20000, 2)) * [1.0, 2.0]
    b = gen.normal(size=(20000, 2)) * [3.0, 2.0] + [1.0, 0.0]
    assert frechet_from_features(a, b) == pytest.approx(1.0 + (1.0 - 3.0) ** 2, rel=0.05)
    assert frechet_from_features(torch.from_numpy(a), a) == pytest.approx(0.0, abs=1e-6)


def test_gaussian_moments_need_two_examples_and_no_more() -> None:
    """Two examples a and b: μ = (a + b)/2, Σ = (b − a)(b − a)ᵀ/2 (divisor N − 1). One example has no covariance."""
    a, b = np.array([0.0, 1.0]), np.array([2.0, -1.0])
    mu, sigma = gaussian_moments(np.stack([a, b]))
    assert np.allclose(mu, [1.0, 0.0]) and np.allclose(sigma, np.outer(b - a, b - a) / 2)
    assert frechet_from_features(np.stack([a, b]), np.stack([a, b])) == pytest.approx(0.0, abs=1e-9)
    for bad in (a[None], np.zeros((0, 2)), a):
        with pytest.raises(ValueError, match="N ≥ 2"):
            gaussian_moments(bad)


# --- Classifier, cache, FD-classifier ------------------------------------------------------------

def test_classifier_is_accurate_and_cached(digits, trained_cache, monkeypatch) -> None:
    root, checksum = trained_cache
    monkeypatch.setenv("FEWSTEP_CACHE", str(root))

    def no_training(*args, **kwargs):
        raise AssertionError("a cached classifier must be loaded, not trained again")

    # A cache hit must not train at all (speed itself is a benchmark's business, not a test's).
    monkeypatch.setattr(classifier_module, "train_classifier", no_training)
    clf = get_classifier(digits)
    assert clf.source == "cache" and clf.checksum == checksum
    assert clf.accuracy >= 0.9
    assert clf.features(digits.heldout[:7]).shape == (7, 16)
    assert float((clf.predict(digits.heldout) == digits.heldout_labels).double().mean()) == pytest.approx(clf.accuracy)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "bad_json"])
def test_a_corrupt_cache_is_retrained_to_the_same_weights(digits, monkeypatch, tmp_path, damage) -> None:
    monkeypatch.setenv("FEWSTEP_CACHE", str(tmp_path))
    recipe = TrainRecipe(steps=20)  # a short recipe: this test is about the cache, not the accuracy
    first = get_classifier(digits, recipe)
    weights, meta = Path(f"{cache_stem(digits, recipe)}.safetensors"), Path(f"{cache_stem(digits, recipe)}.json")
    data = bytearray(weights.read_bytes())
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":  # still a readable file, but the weights no longer match their sha256
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:
        meta.write_text("{not json")
    with torch.no_grad():  # as inside an evaluation loop: training must still get gradients
        again = get_classifier(digits, recipe)
    assert again.source == "trained" and again.checksum == first.checksum  # fixed seeds: same weights
    assert get_classifier(digits, recipe).source == "cache"
    assert not [p.name for p in cache_dir().iterdir() if p.suffix == ".tmp"]  # no temporary files left


def test_a_different_dataset_does_not_reuse_the_cache(digits, trained_cache, monkeypatch) -> None:
    monkeypatch.setenv("FEWSTEP_CACHE", str(trained_cache[0]))
    other = dataclasses.replace(digits, train=digits.train.flip(-1))  # same name, other pixels
    assert cache_stem(other) != cache_stem(digits)
    assert _load(cache_stem(digits), digits) is not None
    assert _load(cache_stem(digits), other) is None  # even under the same file name


def test_fd_classifier_separates_real_from_noise(digits, trained_cache, monkeypatch) -> None:
    monkeypatch.setenv("FEWSTEP_CACHE", str(trained_cache[0]))
    clf = get_classifier(digits)
    ref = clf.features(digits.heldout)
    real = frechet_from_features(clf.features(floor_sample(digits, len(digits.heldout))), ref)
    noise = torch.rand(digits.heldout.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert real < 0.05 * frechet_from_features(clf.features(noise), ref)
    hist = class_histogram(clf, digits.heldout, digits.heldout_labels, 10)
    assert sum(hist["counts"]) == len(digits.heldout) and hist["tv"] < 0.05


# --- Memorisation, histogram, aggregate ----------------------------------------------------------

def test_memorisation_flags_copies_not_heldout(digits) -> None:
    copies = memorisation(digits.train[:200], digits.train, digits.heldout)
    assert copies["nn_ratio_median"] < 1e-4 and copies["nn_copy_fraction"] == 1.0
    fresh = memorisation(digits.heldout, digits.train, digits.heldout)
    assert fresh["nn_ratio_median"] == pytest.approx(1.0) and fresh["nn_copy_fraction"] <= 0.02


def test_total_variation_and_aggregate() -> None:
    assert total_variation(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert total_variation(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5])) == 0.0
    agg = aggregate([1.0, 2.0, 3.0])
    assert agg == {"mean": 2.0, "std": 1.0, "values": [1.0, 2.0, 3.0]}
    assert aggregate([4.0])["std"] == 0.0


# --- evaluate_samples ------------------------------------------------------------------------------

def test_noise_floor_samples_with_replacement_when_needed(moons) -> None:
    small, large = floor_sample(moons, 10, seed=3), floor_sample(moons, len(moons.train) + 5, seed=3)
    assert torch.equal(small, floor_sample(moons, 10, seed=3)) and len(large) == len(moons.train) + 5
    assert len(torch.unique(small, dim=0)) == 10
    assert noise_floor(moons, 500, sliced_wasserstein) == noise_floor(moons, 500, sliced_wasserstein)


def test_evaluate_samples_points(moons) -> None:
    report = evaluate_samples(moons, moons.train[:1000] * 1.5)
    assert set(report) == {"swd", "swd_floor", "n_samples", "n_reference"}
    assert report["n_samples"] == 1000 and report["n_reference"] == len(moons.heldout)
    assert report["swd"] > 3 * report["swd_floor"]
    with pytest.raises(ValueError, match="expected"):
        evaluate_samples(moons, torch.zeros(5, 3))


def test_evaluate_samples_labelled_images(digits, trained_cache, monkeypatch) -> None:
    monkeypatch.setenv("FEWSTEP_CACHE", str(trained_cache[0]))
    noise = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    report = evaluate_samples(digits, noise)
    for key in ("fd_classifier", "fd_floor", "class_tv", "class_hist", "nn_ratio_median", "nn_copy_fraction",
                "n_samples", "n_reference"):
        assert key in report
    assert report["fd_classifier"] > 10 * report["fd_floor"]
    assert len(report["class_hist"]) == 10 and sum(report["class_hist"]) == 300
    assert report["nn_ratio_median"] > 1.0 and report["nn_copy_fraction"] == 0.0


def test_evaluate_samples_unlabelled_images(digits) -> None:
    unlabelled = dataclasses.replace(digits, train_labels=None, heldout_labels=None, num_classes=None)
    report = evaluate_samples(unlabelled, digits.train[:100])
    assert set(report) == {"swd", "swd_floor", "nn_ratio_median", "nn_copy_fraction", "n_samples", "n_reference"}
    assert report["nn_copy_fraction"] == 1.0
