"""Class balance of generated images under the classifier.

    p_k = #{samples labelled k} / N,   q_k = held-out label frequencies,
    TV(p, q) = ½ Σ_k |p_k − q_k|       (0: same balance, 1: disjoint classes)
"""
from __future__ import annotations

import torch
from torch import Tensor

from .classifier import FeatureClassifier


def class_counts(labels: Tensor, num_classes: int) -> Tensor:
    """Counts per class, [N] int labels → [K] int64."""
    return torch.bincount(labels.detach().cpu().long(), minlength=num_classes)[:num_classes]


def total_variation(p: Tensor, q: Tensor) -> float:
    """TV(p, q) = ½ Σ_k |p_k − q_k| for probability vectors [K]."""
    return 0.5 * float((p.double() - q.double()).abs().sum())


def class_histogram(
    classifier: FeatureClassifier, samples: Tensor, reference_labels: Tensor, num_classes: int
) -> dict[str, object]:
    """Counts and fractions of predicted classes of ``samples`` [N, C, H, W], and TV to the reference labels."""
    counts = class_counts(classifier.predict(samples), num_classes)  # [K]
    ref = class_counts(reference_labels, num_classes)                # [K]
    p = counts.double() / max(1, int(counts.sum()))
    q = ref.double() / max(1, int(ref.sum()))
    return {"counts": counts.tolist(), "fraction": p.tolist(), "tv": total_variation(p, q)}
