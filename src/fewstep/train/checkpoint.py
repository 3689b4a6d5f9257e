"""Checkpoints: safetensors for tensors, JSON for everything else; nothing is pickled.

A run folder holds
    config.json                  the resolved TrainConfig
    checkpoint.json              format version, step, RNG states, optimiser hyper-state, extras,
                                 and the name and sha256 of the weights file it belongs to
    weights-<step>.safetensors   model.*, ema.*, opt.* tensors
    log.jsonl                    the run log

Each file is written to a temporary name and renamed. The weights file is named by step and
``checkpoint.json`` is renamed last, so a crash at any point leaves the previous checkpoint whole.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..config import TrainConfig
from ..errors import UserError

FORMAT_VERSION = 1
RUN_FILES = ("config.json", "checkpoint.json", "log.jsonl")


@dataclass
class Checkpoint:
    config: TrainConfig
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None = None
    rng: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def encode_rng(state: torch.Tensor) -> str:
    return base64.b64encode(state.numpy().tobytes()).decode()


def decode_rng(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, {"param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)  # names arrive without their "opt." prefix
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(workdir: Path, ckpt: Checkpoint) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in ckpt.model.items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ckpt.ema.items()})
    opt_meta = None
    if ckpt.optimizer is not None:
        opt_tensors, opt_meta = _flatten_optimizer(ckpt.optimizer)
        tensors.update(opt_tensors)
    weights = workdir / f"weights-{ckpt.step:08d}.safetensors"
    tmp = weights.with_name(f".{weights.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp))
    os.replace(tmp, weights)
    meta = {
        "format_version": FORMAT_VERSION,
        "step": ckpt.step,
        "weights": weights.name,
        "weights_sha256": _sha256(weights),
        "optimizer": opt_meta,
        "rng": ckpt.rng,
        "extra": ckpt.extra,
    }
    atomic_write_text(workdir / "config.json", ckpt.config.to_json())
    atomic_write_text(workdir / "checkpoint.json", json.dumps(meta, indent=1))
    for old in workdir.glob("weights-*.safetensors"):
        if old.name != weights.name:
            old.unlink()


def load_checkpoint(workdir: Path | str, *, flag: str = "--run", with_optimizer: bool = False) -> Checkpoint:
    workdir = Path(workdir)
    meta_path = workdir / "checkpoint.json"
    if not meta_path.is_file():
        raise UserError(f"{flag}: {workdir} has no checkpoint.json; expected the folder of a fewstep run")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{flag}: cannot read {meta_path} ({exc})") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise UserError(f"{flag}: {workdir} has checkpoint format version {version}; this fewstep reads version {FORMAT_VERSION}")
    try:
        config = TrainConfig.from_dict(json.loads((workdir / "config.json").read_text()))
    except (OSError, ValueError, TypeError, UserError) as exc:
        raise UserError(f"{flag}: cannot read {workdir / 'config.json'} ({exc})") from None
    weights = workdir / meta["weights"]
    if not weights.is_file() or _sha256(weights) != meta["weights_sha256"]:
        raise UserError(f"{flag}: {weights} is missing, truncated or does not match checkpoint.json")
    tensors = load_file(str(weights))
    group = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    optimizer = None
    if with_optimizer and meta.get("optimizer") is not None:
        optimizer = _unflatten_optimizer(group("opt."), meta["optimizer"])
    return Checkpoint(config, meta["step"], group("model."), group("ema."), optimizer, meta.get("rng", {}), meta.get("extra", {}))


def remove_run(workdir: Path) -> None:
    """Remove fewstep's own files from a run folder (``--overwrite``); other files are left alone."""
    for name in RUN_FILES:
        (workdir / name).unlink(missing_ok=True)
    for weights in workdir.glob("weights-*.safetensors"):
        weights.unlink()
