"""The feature network behind ``FD-classifier``: a small CNN trained once per data set, then cached.

The net maps images [N, C, H, W] in [−1, 1] (any H, W) to a 16-d feature vector (the penultimate
layer) and from there to class logits. It is trained on the data set's training split and labels
with fixed seeds, and saved under ``$FEWSTEP_CACHE/classifiers`` (default ``~/.cache/fewstep``) as
safetensors + JSON. The file name holds a sha256 of the training data and of the training recipe, so
a different data set or recipe never reuses it; a cache that fails to load or whose weights do not
match the recorded sha256 is retrained. Files are written atomically (:func:`fewstep.io.atomic_write`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import Tensor, nn

from ..data import Dataset
from ..io import save_bytes, save_json

FEATURE_DIM = 16


@dataclass(frozen=True)
class TrainRecipe:
    """Everything that decides the weights besides the data; part of the cache key."""

    version: int = 1  # bump when the architecture changes
    feature_dim: int = FEATURE_DIM
    steps: int = 400
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()


class ClassifierNet(nn.Module):
    """conv(32) → conv(64, /2) → conv(64, /2) → 2×2 average pool → linear(16) = features → linear(K)."""

    def __init__(self, in_channels: int, num_classes: int, feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.feature = nn.Linear(64 * 4, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.feature(self.convs(x).flatten(1))  # [N, C, H, W] → [N, F]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # [N, K]


class FeatureClassifier:
    """A trained :class:`ClassifierNet` in eval mode: ``features``, ``predict``, ``checksum``, ``accuracy``."""

    def __init__(self, net: ClassifierNet, *, accuracy: float, checksum: str, source: str) -> None:
        self.net = net.eval().requires_grad_(False)
        self.accuracy = accuracy  # held-out accuracy
        self.checksum = checksum  # sha256 of the weights (see weights_sha256)
        self.source = source      # "trained" or "cache"

    @property
    def feature_dim(self) -> int:
        return self.net.feature.out_features

    @torch.no_grad()
    def features(self, images: Tensor, batch_size: int = 1000) -> Tensor:
        """Images [N, C, H, W], clipped to [−1, 1] → features [N, F] (float32, CPU)."""
        return self._batched(images, self.net.features, batch_size)

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 1000) -> Tensor:
        """Images [N, C, H, W] → arg-max labels [N] (int64, CPU)."""
        return self._batched(images, self.net, batch_size).argmax(1)

    def _batched(self, images: Tensor, fn, batch_size: int) -> Tensor:
        in_channels = self.net.convs[0].in_channels
        if images.ndim != 4 or images.shape[1] != in_channels:
            raise ValueError(f"classifier: expected images [N, {in_channels}, H, W], got shape {list(images.shape)}")
        x = images.detach().to("cpu", torch.float32).clamp(-1.0, 1.0)
        return torch.cat([fn(b) for b in x.split(batch_size)]) if len(x) else fn(x)


def get_classifier(dataset: Dataset, recipe: TrainRecipe = TrainRecipe()) -> FeatureClassifier:
    """The cached classifier for ``dataset``, trained (and cached) on first use."""
    if dataset.kind != "images" or dataset.train_labels is None or dataset.num_classes is None:
        raise ValueError(f"classifier: data set {dataset.name!r} has no labelled images")
    stem = cache_stem(dataset, recipe)
    cached = _load(stem, dataset)
    if cached is not None:
        return cached
    net = train_classifier(dataset, recipe)
    acc = heldout_accuracy(net, dataset)
    _save(stem, net, dataset, recipe, acc)
    return FeatureClassifier(net, accuracy=acc, checksum=weights_sha256(net.state_dict()), source="trained")


def train_classifier(dataset: Dataset, recipe: TrainRecipe) -> ClassifierNet:
    """AdamW with a one-cycle learning rate on cross-entropy over the training split: fixed seeds, CPU, one thread.

    One thread makes the weights independent of the machine's thread count, and on a busy 2-core
    CPU it is also faster than two threads. The global RNG and thread count are left untouched.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode(False), torch.enable_grad():  # callers may evaluate under no_grad
            return _train(dataset, recipe)
    finally:
        torch.set_num_threads(threads)


def _train(dataset: Dataset, recipe: TrainRecipe) -> ClassifierNet:
    x, y = dataset.train.to("cpu", torch.float32), dataset.train_labels.cpu()  # [N, C, H, W], [N]
    gen = torch.Generator().manual_seed(recipe.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = ClassifierNet(x.shape[1], dataset.num_classes, recipe.feature_dim)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.steps)
    net.train()
    for _ in range(recipe.steps):
        idx = torch.randint(len(x), (recipe.batch_size,), generator=gen)  # [B]
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@torch.no_grad()
def heldout_accuracy(net: ClassifierNet, dataset: Dataset) -> float:
    """Fraction of held-out images whose arg-max label is right."""
    x, y = dataset.heldout.to("cpu", torch.float32), dataset.heldout_labels.cpu()
    pred = torch.cat([net.eval()(b).argmax(1) for b in x.split(1000)])  # [N]
    return float((pred == y).double().mean())


def cache_dir() -> Path:
    """``$FEWSTEP_CACHE/classifiers``, default ``~/.cache/fewstep/classifiers``."""
    root = os.environ.get("FEWSTEP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fewstep")
    return Path(root) / "classifiers"


def cache_stem(dataset: Dataset, recipe: TrainRecipe = TrainRecipe()) -> Path:
    """``<cache_dir>/<name>-<data sha256[:16]>-<recipe sha256[:8]>``; add .safetensors or .json."""
    return cache_dir() / f"{_safe(dataset.name)}-{data_checksum(dataset)[:16]}-{recipe.digest()[:8]}"


def data_checksum(dataset: Dataset) -> str:
    """sha256 over the training images' and labels' shapes and bytes."""
    h = hashlib.sha256()
    for t in (dataset.train.to("cpu", torch.float32), dataset.train_labels.to("cpu", torch.int64)):
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def weights_sha256(state: dict[str, Tensor]) -> str:
    """sha256 over (name, shape, bytes) of each tensor in name order: independent of the file format."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _save(stem: Path, net: ClassifierNet, dataset: Dataset, recipe: TrainRecipe, accuracy: float) -> None:
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    meta = {
        "dataset": dataset.name,
        "data_sha256": data_checksum(dataset),
        "in_channels": int(dataset.train.shape[1]),
        "num_classes": int(dataset.num_classes),
        "feature_dim": recipe.feature_dim,
        "heldout_accuracy": accuracy,
        "weights_sha256": weights_sha256(state),
        "recipe": dataclasses.asdict(recipe),
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_bytes(_with(stem, ".safetensors"), save(state))
    save_json(_with(stem, ".json"), meta)


def _load(stem: Path, dataset: Dataset) -> FeatureClassifier | None:
    """The cached classifier, or None if it is missing, unreadable or does not match its record."""
    try:
        meta = json.loads(_with(stem, ".json").read_text())
        state = load_file(str(_with(stem, ".safetensors")))
        if meta["data_sha256"] != data_checksum(dataset) or meta["weights_sha256"] != weights_sha256(state):
            return None
        net = ClassifierNet(meta["in_channels"], meta["num_classes"], meta["feature_dim"])
        net.load_state_dict(state, strict=True)
    except Exception:  # missing or corrupt: retrain  # noqa: BLE001
        return None
    return FeatureClassifier(net, accuracy=float(meta["heldout_accuracy"]), checksum=meta["weights_sha256"],
                             source="cache")


def _with(stem: Path, suffix: str) -> Path:
    return stem.parent / (stem.name + suffix)  # not with_suffix: a data set's name may hold a dot


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "data"
