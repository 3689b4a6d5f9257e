"""A tiny distributed layer: a no-op in one process, DDP under ``torchrun``.

    torchrun --nproc_per_node=2 -m fewstep.cli.main train --data moons --out runs/moons

gloo on CPU, NCCL on CUDA. Rank 0 alone writes checkpoints and logs; each rank offsets its seed.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> None:
    if is_distributed() and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean_scalar(value: float, device: torch.device) -> float:
    """The mean of a Python float over ranks (for logging)."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return t.item() / world_size()


def shard(n: int) -> int:
    """This rank's share of ``n`` items (the first ``n % world`` ranks take one more)."""
    return n // world_size() + (rank() < n % world_size())


def shard_rows(n: int) -> torch.Tensor:
    """The indices of this rank's share of ``n`` items, contiguous and in rank order, so that gathering
    the ranks' shares in rank order gives items 0…n−1."""
    world, me = world_size(), rank()
    start = sum(n // world + (r < n % world) for r in range(me))
    return torch.arange(start, start + shard(n))


def gather_to_main(x: torch.Tensor) -> torch.Tensor | None:
    """Every rank's ``x`` concatenated in rank order on the main rank (None elsewhere); ``x`` itself in
    one process."""
    if not dist.is_initialized():
        return x
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, x.cpu())
    return torch.cat(parts) if is_main() else None


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA if available (the local rank's GPU under torchrun), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            from ..errors import UserError

            raise UserError("cuda was requested but no CUDA device is available; use --device cpu or auto", arg="device")
        return torch.device("cuda", local_rank())
    return torch.device(name)
