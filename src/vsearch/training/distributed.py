"""Distributed helpers: torchrun environment detection and the one all-gather for negatives.

Single-process runs never touch ``torch.distributed``: every helper short-circuits when the
world size is 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def detect() -> DistEnv:
    """Read the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK); defaults to one process."""
    return DistEnv(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init(env: DistEnv, device: torch.device) -> None:
    """Join the process group (NCCL on GPU, gloo on CPU) when launched by torchrun."""
    if not env.enabled or torch.distributed.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)


def shutdown(env: DistEnv) -> None:
    if env.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather ``tensor`` (B, ...) from every rank into (world * B, ...), in rank order.

    Gradients flow back through the gather (``torch.distributed.nn.all_gather``), so every
    rank computes the loss over the global batch; with DDP's gradient averaging the result
    equals single-process training on that global batch. One process: returns ``tensor``.
    """
    if world_size() == 1:
        return tensor
    from torch.distributed.nn import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def barrier() -> None:
    if world_size() > 1:
        torch.distributed.barrier()


def all_reduce_mean(value: float) -> float:
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t.item() / world_size())
