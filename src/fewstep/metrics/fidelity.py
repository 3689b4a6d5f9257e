"""Prompt fidelity: how often a sample shows what its prompt asked for, element by element of the caption
grammar (:mod:`fewstep.data.captions`, docs/captions.md).

    digit       the data set's classifier (:func:`get_classifier`) names the prompt's digit
    thickness,  the sample's bin, by the measurement that wrote the captions and the bins of the prompt's
    slant,      digit class (the classifier's digit where the prompt names none), equals the prompt's
    width

Each ``fidelity_<element>`` comes with three figures to read it against:

    _reference  the same scoring of the real held-out images against their own captions: the
                classifier's accuracy for the digit; exactly 1.0 for an attribute (the measurement wrote it)
    _chance     the largest share of one value in the training data (class, or bin: about 1/3)
    _shuffled   the same samples scored against a fixed permutation of the prompts: the floor, what a
                generator that ignores the prompt (but draws from the data) scores

A prompt that does not name an element is not scored on it; an element no prompt names is left out.
Data sets without the grammar's bins in ``meta["caption_bins"]`` (a user's captioned data) get {}:
free captions have no measurement to check them against.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..data import Dataset
from ..data.captions import Bins, measure, parse
from .classifier import get_classifier


def prompt_fidelity(dataset: Dataset, samples: Tensor, prompts: Sequence[str], *, seed: int = 0) -> dict[str, float]:
    """Prompt fidelity of ``samples`` (model units, [N, C, H, W]) generated for ``prompts`` (N strings);
    ``seed`` fixes the permutation of the shuffled floor. See the module docstring."""
    spec = dataset.meta.get("caption_bins")
    if spec is None or dataset.heldout_captions is None:
        return {}
    if len(prompts) != len(samples):
        raise ValueError(f"prompt fidelity: {len(samples)} samples but {len(prompts)} prompts")
    bins = Bins.from_dict(spec)
    clf = get_classifier(dataset)
    asked = [parse(p) for p in prompts]
    order = torch.randperm(len(asked), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [asked[i] for i in order]
    seen = _Seen(samples, clf.predict(samples).numpy())
    real = _Seen(dataset.heldout, clf.predict(dataset.heldout).numpy())
    real_asked = [parse(c) for c in dataset.heldout_captions]
    labels = dataset.train_labels.numpy()
    chance = {"digit": float(np.bincount(labels).max() / len(labels)),
              **{name: float(max(shares)) for name, shares in bins.train_shares.items()}}
    out: dict[str, float] = {}
    for element in ("digit", *bins.attributes):
        if not any(element in a for a in asked):
            continue
        out[f"fidelity_{element}"] = _score(element, seen, asked, bins)
        out[f"fidelity_{element}_reference"] = _score(element, real, real_asked, bins)
        out[f"fidelity_{element}_chance"] = chance[element]
        out[f"fidelity_{element}_shuffled"] = _score(element, seen, shuffled, bins)
    return out


class _Seen:
    """What the scorers see in a set of images: the classifier's digits and the measured attributes."""

    def __init__(self, images: Tensor, digits: np.ndarray) -> None:
        self.digits = digits
        self.values = measure(images)


def _score(element: str, seen: _Seen, asked: list[dict[str, int]], bins: Bins) -> float:
    """The share of the images whose ``element`` matches the one asked for, over the prompts that ask."""
    rows = np.array([i for i, a in enumerate(asked) if element in a], dtype=np.int64)
    if len(rows) == 0:
        return float("nan")
    wanted = np.array([asked[i][element] for i in rows])
    if element == "digit":
        return float(np.mean(seen.digits[rows] == wanted))
    classes = np.array([asked[i].get("digit", seen.digits[i]) for i in rows])
    got = bins.assign({element: seen.values[element][rows]}, classes)[element]
    return float(np.mean(got == wanted))


__all__ = ["prompt_fidelity"]
