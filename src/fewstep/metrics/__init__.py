"""Sample-quality metrics, picked by data set kind, each with the noise floor of a perfect generator.

    points            → SWD (sliced W2, model units)                             swd, swd_floor
    labelled images   → FD-classifier (Fréchet distance of 16-d classifier
                        features), class balance, nearest-neighbour copying     fd_classifier, fd_floor,
                                                                                class_tv, class_tv_floor,
                                                                                class_hist, nn_ratio_median,
                                                                                nn_copy_fraction
    unlabelled images → SWD on flattened pixels + nearest-neighbour copying     swd, swd_floor,
                                                                                nn_ratio_median, nn_copy_fraction

With ``labels`` (the class each sample was asked for) on labelled data, ``class_accuracy`` is the share of
samples the data set's classifier (the CNN above for images, 5-nearest-neighbour on the training points
for points) assigns to the class asked for, and ``class_accuracy_reference`` the same classifier's
accuracy on the real held-out examples: the figure a perfect conditional generator would score
(guided samples may exceed it).

With ``prompts`` (the caption each sample was generated for) on ``digits-text``/``mnist-text``, prompt
fidelity per element of the caption grammar, each with its reference, chance level and shuffled-prompt
floor (:mod:`fewstep.metrics.fidelity`): ``fidelity_digit``, ``fidelity_thickness``, ``fidelity_slant``,
``fidelity_width`` and their ``_reference``, ``_chance``, ``_shuffled``; nothing on other data.

The reference set is always the data set's held-out split. The floor is the same metric for n images
drawn from the *training* split (what a perfect generator of n samples would score), so a result is
read as "distance above the floor". Usage::

    from fewstep.data import load_dataset
    from fewstep.metrics import evaluate_samples
    report = evaluate_samples(load_dataset("digits"), samples)  # samples [N, 1, 8, 8] in [−1, 1]
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..data import Dataset
from .classifier import FeatureClassifier, get_classifier
from .fid import frechet_distance, frechet_from_features
from .fidelity import prompt_fidelity
from .histogram import class_histogram, total_variation
from .memorisation import memorisation, nearest_distances
from .swd import sliced_wasserstein

Metric = Callable[[Tensor, Tensor], float]  # (samples, reference) → value


def floor_sample(dataset: Dataset, n: int, seed: int = 0) -> Tensor:
    """n training examples: without replacement if n ≤ |train|, else with replacement; seeded."""
    gen = torch.Generator().manual_seed(seed)
    size = len(dataset.train)
    idx = torch.randperm(size, generator=gen)[:n] if n <= size else torch.randint(size, (n,), generator=gen)
    return dataset.train[idx]


def noise_floor(dataset: Dataset, n: int, metric: Metric, *, seed: int = 0) -> float:
    """metric(n training examples, held-out split): the score of a perfect generator of n samples."""
    return metric(floor_sample(dataset, n, seed), dataset.heldout)


def evaluate_samples(dataset: Dataset, samples: Tensor, *, seed_floor: int = 0, labels: Tensor | None = None,
                     prompts: Sequence[str] | None = None) -> dict[str, Any]:
    """The metrics for ``dataset``'s kind (see the module docstring) for samples in model units;
    ``labels``: the classes the samples were asked for (adds the class accuracy); ``prompts``: the
    captions they were generated for (adds prompt fidelity on a data set with the caption grammar;
    ``seed_floor`` also fixes its shuffle)."""
    samples = _checked(dataset, samples)
    out: dict[str, Any] = {"n_samples": len(samples), "n_reference": len(dataset.heldout)}
    if labels is not None:
        out.update(class_accuracy(dataset, samples, labels))
    if prompts is not None:
        out.update(prompt_fidelity(dataset, samples, prompts, seed=seed_floor))
    if dataset.kind == "points":
        out.update(_swd_report(dataset, samples, seed_floor))
    elif dataset.train_labels is not None:
        out.update(_classifier_report(dataset, samples, seed_floor))
        out.update(_nn_report(dataset, samples))
    else:
        out.update(_swd_report(dataset, samples, seed_floor))
        out.update(_nn_report(dataset, samples))
    return out


def aggregate(values: list[float]) -> dict[str, Any]:
    """Spread over sampling seeds: mean, sample standard deviation (divisor n − 1; 0 for one value), values."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("aggregate: no values")
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"mean": mean, "std": std, "values": vals}


def _swd_report(dataset: Dataset, samples: Tensor, seed_floor: int) -> dict[str, float]:
    return {
        "swd": sliced_wasserstein(samples, dataset.heldout),
        "swd_floor": noise_floor(dataset, len(samples), sliced_wasserstein, seed=seed_floor),
    }


def _classifier_report(dataset: Dataset, samples: Tensor, seed_floor: int) -> dict[str, Any]:
    if len(samples) < 2:
        raise ValueError(f"FD-classifier needs at least 2 samples, got {len(samples)}")
    clf = get_classifier(dataset)
    ref_features = clf.features(dataset.heldout)  # [M, F]
    assert dataset.num_classes is not None and dataset.heldout_labels is not None

    def fd(s: Tensor, _reference: Tensor) -> float:
        return frechet_from_features(clf.features(s), ref_features)

    def tv(s: Tensor, _reference: Tensor) -> float:
        return class_histogram(clf, s, dataset.heldout_labels, dataset.num_classes)["tv"]

    hist = class_histogram(clf, samples, dataset.heldout_labels, dataset.num_classes)
    return {
        "fd_classifier": fd(samples, dataset.heldout),
        "fd_floor": noise_floor(dataset, len(samples), fd, seed=seed_floor),
        "class_tv": hist["tv"],
        "class_tv_floor": noise_floor(dataset, len(samples), tv, seed=seed_floor),
        "class_hist": hist["counts"],
        "classifier_accuracy": clf.accuracy,
        "classifier_sha256": clf.checksum,
    }


def class_accuracy(dataset: Dataset, samples: Tensor, labels: Tensor) -> dict[str, float]:
    """The share of ``samples`` assigned to the class in ``labels``, and the same on the real held-out split."""
    if dataset.train_labels is None or dataset.heldout_labels is None:
        raise ValueError(f"class accuracy needs labelled data; {dataset.name} has no labels")
    labels = torch.as_tensor(labels).long().cpu()
    if labels.shape != (len(samples),):
        raise ValueError(f"class accuracy: {len(samples)} samples but labels of shape {list(labels.shape)}")
    predict = _points_classifier(dataset) if dataset.kind == "points" else get_classifier(dataset).predict
    reference = (predict(dataset.heldout) == dataset.heldout_labels).double().mean()
    return {"class_accuracy": float((predict(samples) == labels).double().mean()),
            "class_accuracy_reference": float(reference)}


def _points_classifier(dataset: Dataset) -> Callable[[Tensor], Tensor]:
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(5).fit(dataset.train.numpy(), dataset.train_labels.numpy())
    return lambda x: torch.from_numpy(knn.predict(x.detach().cpu().numpy())).long()


MEMO_BANK = 10_000  # streamed training sets: the nearest-neighbour bank is their first this many examples


def _nn_report(dataset: Dataset, samples: Tensor) -> dict[str, float]:
    bank = dataset.train if isinstance(dataset.train, Tensor) else dataset.train[:MEMO_BANK]
    m = memorisation(samples, bank, dataset.heldout)
    return {"nn_ratio_median": m["nn_ratio_median"], "nn_copy_fraction": m["nn_copy_fraction"]}


def _checked(dataset: Dataset, samples: Tensor) -> Tensor:
    if tuple(samples.shape[1:]) != dataset.shape or len(samples) == 0:
        raise ValueError(
            f"evaluate_samples: samples have shape {list(samples.shape)}; expected [N ≥ 1, {', '.join(map(str, dataset.shape))}]"
        )
    samples = samples.detach().to("cpu", torch.float32)
    if not torch.isfinite(samples).all():
        raise ValueError("evaluate_samples: samples contain NaN or inf")
    return samples


__all__ = [
    "evaluate_samples", "class_accuracy", "prompt_fidelity", "noise_floor", "floor_sample", "aggregate", "sliced_wasserstein",
    "frechet_distance", "frechet_from_features", "get_classifier", "FeatureClassifier",
    "class_histogram", "total_variation", "memorisation", "nearest_distances",
]
