"""Standard Inception FID from a user's TorchScript ``inception-2015-12-05.pt``.

The file is the one stylegan2-ada-pytorch publishes (clean-fid uses the same network); fewstep never
downloads it. The network takes float images [N, 3, H, W] holding uint8 values in [0, 255] (it resizes
to 299 × 299 itself) and, called as ``model(images, return_features=True)``, returns the 2048-d pool
features [N, 2048]. Samples in model units ([−1, 1]) are quantised to uint8 values exactly as
``Normaliser.to_data`` does; grayscale is repeated to 3 channels, an alpha channel is dropped.

    FID       = FD(Inception features of the samples, of the held-out split)      (metrics.fid)
    FID floor = the same for n training images, n = the number of samples (a perfect generator)

Usage::

    fid = InceptionFID.load("inception-2015-12-05.pt", device="cpu")
    fid(dataset, samples, seed_floor=0)  # {"fid": …, "fid_floor": …}
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data import Dataset
from ..errors import UserError
from ..io import sha256_file
from .fid import frechet_from_features

ARG = "fid_weights"  # the argument (CLI: --fid-weights) errors name


def load_inception(path: Path | str, device: str | torch.device = "cpu", arg: str = ARG) -> torch.jit.ScriptModule:
    """``torch.jit.load(path)``; a missing or unloadable file is a one-line :class:`UserError` naming ``arg``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; expected the TorchScript file inception-2015-12-05.pt", arg=arg)
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format the file comes in
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load", category=DeprecationWarning)
            model = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # noqa: BLE001 — any load failure is the user's file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a loadable TorchScript model ({first})", arg=arg) from None
    return model.eval()


def to_uint8_range(images: Tensor) -> Tensor:
    """Model-unit images [N, C, H, W] in [−1, 1] → float [N, 3, H, W] of integers in [0, 255]."""
    x = torch.round((images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5)  # as Normaliser.to_data
    if x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)  # grayscale → RGB
    return x[:, :3]  # RGB, or RGBA without its alpha


class InceptionFID:
    """A loaded feature network; held-out features are computed once per data set."""

    def __init__(self, model: torch.jit.ScriptModule, *, path: Path, device: str | torch.device = "cpu",
                 arg: str = ARG, batch_size: int = 100) -> None:
        self.model = model
        self.path = Path(path)
        self.device = torch.device(device)
        self.arg = arg
        self.batch_size = batch_size
        self.feature_dim: int | None = None  # known after the first batch
        self._heldout: tuple[Tensor, Tensor] | None = None  # (held-out images, their features)

    @classmethod
    def load(cls, path: Path | str, device: str | torch.device = "cpu", arg: str = ARG) -> "InceptionFID":
        return cls(load_inception(path, device, arg), path=Path(path), device=device, arg=arg)

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """Model-unit images [N, C, H, W] → features [N, F] (float64, CPU), checked batch by batch."""
        if images.ndim != 4 or images.shape[1] not in (1, 3, 4):
            raise UserError(f"Inception FID needs images [N, 1|3|4, H, W], got shape {list(images.shape)}", arg=self.arg)
        return torch.cat([self._batch(b) for b in images.split(self.batch_size)])

    def _batch(self, images: Tensor) -> Tensor:
        x = to_uint8_range(images).to(self.device)  # [B, 3, H, W]
        try:
            out = self.model(x, return_features=True)
        except Exception as exc:  # noqa: BLE001 — a wrong network fails in its own code
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"the model failed on images {list(x.shape)} ({first[:200]})", arg=self.arg) from None
        if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != len(x):
            shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise UserError(f"the model returned {shape} for {len(x)} images; expected features [N, F]", arg=self.arg)
        self.feature_dim = int(out.shape[1])
        return out.detach().to("cpu", torch.float64)

    def heldout_features(self, dataset: Dataset) -> Tensor:
        if self._heldout is None or self._heldout[0] is not dataset.heldout:
            self._heldout = (dataset.heldout, self.features(dataset.heldout))  # [M, F]
        return self._heldout[1]

    def __call__(self, dataset: Dataset, samples: Tensor, *, seed_floor: int = 0) -> dict[str, float]:
        """{"fid": FID(samples, held-out), "fid_floor": FID(n training images, held-out)}."""
        from . import floor_sample

        reference = self.heldout_features(dataset)
        return {
            "fid": frechet_from_features(self.features(samples), reference),
            "fid_floor": frechet_from_features(self.features(floor_sample(dataset, len(samples), seed_floor)), reference),
        }

    def describe(self) -> dict[str, Any]:
        """The protocol entry: which network, which file, its checksum."""
        return {"network": "Inception-v3 (TorchScript inception-2015-12-05.pt), pool features", "weights": str(self.path),
                "weights_sha256": sha256_file(self.path), "feature_dim": self.feature_dim}
