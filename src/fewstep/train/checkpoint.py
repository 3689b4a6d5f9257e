"""Checkpoints: safetensors for tensors, JSON for everything else; nothing is pickled.

A run folder holds
    config.json                  the resolved run config (a plain JSON object here)
    checkpoint.json              format version, step, RNG states, optimiser hyper-state, the run card
                                 (``extra``), and the name and sha256 of the weights file it belongs to
    weights-<step>.safetensors   model.*, ema.*, opt.* tensors
    log.jsonl                    the run log

Each file is written atomically (:func:`fewstep.io.atomic_write`: temporary name, fsync, rename, fsync
of the folder). The weights file is named by step and ``checkpoint.json`` is renamed last, so a crash
at any point leaves the previous checkpoint whole. This module knows the file format only; what a
config or a card means is :mod:`fewstep.runs`' business.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..errors import UserError
from ..io import save_bytes, save_text, sha256_file

FORMAT_VERSION = 1
RUN_FILES = ("config.json", "checkpoint.json", "log.jsonl")


@dataclass
class Checkpoint:
    config: dict[str, Any]
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None = None
    rng: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


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
    save_bytes(weights, save(tensors))
    meta = {
        "format_version": FORMAT_VERSION,
        "step": ckpt.step,
        "weights": weights.name,
        "weights_sha256": sha256_file(weights),
        "optimizer": opt_meta,
        "rng": ckpt.rng,
        "extra": ckpt.extra,
    }
    save_text(workdir / "config.json", json.dumps(ckpt.config, indent=2, sort_keys=True))
    save_text(workdir / "checkpoint.json", json.dumps(meta, indent=1))
    for old in workdir.glob("weights-*.safetensors"):
        if old.name != weights.name:
            old.unlink()


def read_checkpoint(workdir: Path | str, *, arg: str = "run", with_optimizer: bool = False) -> Checkpoint:
    """The checkpoint in ``workdir``, its files checked: the format version, a weights file inside the
    folder whose sha256 matches, JSON that parses. Errors name ``arg`` (the argument that gave the folder)."""
    workdir = Path(workdir)
    meta_path = workdir / "checkpoint.json"
    if not meta_path.is_file():
        raise UserError(f"{workdir} has no checkpoint.json; expected the folder of a fewstep run", arg=arg)
    meta = _read_json(meta_path, arg)
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise UserError(f"{workdir} has checkpoint format version {version}; this fewstep reads version {FORMAT_VERSION}", arg=arg)
    config = _read_json(workdir / "config.json", arg)
    if not isinstance(config, dict):
        raise UserError(f"{workdir / 'config.json'} is not a JSON object", arg=arg)
    name = meta.get("weights")
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
        raise UserError(f"{meta_path} names the weights file {name!r}; expected a .safetensors file inside the run folder", arg=arg)
    weights = workdir / name
    if not weights.is_file() or sha256_file(weights) != meta.get("weights_sha256"):
        raise UserError(f"{weights} is missing, truncated or does not match checkpoint.json", arg=arg)
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"cannot read {weights} ({exc})", arg=arg) from None
    step, rng, extra, opt_meta = meta.get("step"), meta.get("rng", {}), meta.get("extra", {}), meta.get("optimizer")
    if not (isinstance(step, int) and step >= 0 and isinstance(rng, dict) and isinstance(extra, dict)
            and (opt_meta is None or isinstance(opt_meta, dict) and isinstance(opt_meta.get("param_groups"), list))):
        raise UserError(f"{meta_path} is malformed: expected an integer step >= 0 and objects for rng, extra and optimizer", arg=arg)
    group = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    optimizer = None
    if with_optimizer and opt_meta is not None:
        try:
            optimizer = _unflatten_optimizer(group("opt."), opt_meta)
        except ValueError as exc:  # a tensor name that is not opt.<index>.<key>
            raise UserError(f"{weights} holds malformed optimiser tensors ({exc})", arg=arg) from None
    return Checkpoint(config, step, group("model."), group("ema."), optimizer, rng, extra)


def _read_json(path: Path, arg: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} ({exc})", arg=arg) from None


def remove_run(workdir: Path) -> None:
    """Remove fewstep's own files from a run folder (``--overwrite``); other files are left alone."""
    for name in RUN_FILES:
        (workdir / name).unlink(missing_ok=True)
    for weights in workdir.glob("weights-*.safetensors"):
        weights.unlink()
