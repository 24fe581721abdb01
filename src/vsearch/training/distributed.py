"""Distributed helpers: torchrun environment detection, process group, per-rank seeds.

Single-process runs never touch ``torch.distributed``: every helper short-circuits when the
world size is 1. The one all-gather for negatives lives below training, in
``vsearch.collectives``, since the loss needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from vsearch.collectives import world_size


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
    if device.type == "cuda":
        # Bind this process to its GPU first: NCCL collectives (and barrier) run on the
        # current device, which would otherwise be cuda:0 for every local rank.
        torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend="nccl", rank=env.rank, world_size=env.world_size, device_id=device)
    else:
        torch.distributed.init_process_group(backend="gloo", rank=env.rank, world_size=env.world_size)


def shutdown(env: DistEnv) -> None:
    if env.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        torch.distributed.barrier()


def rank_seed(seed: int, step: int, env: DistEnv) -> int | None:
    """The RNG seed of ``env``'s rank for ``step``, or None for one process (its stream is untouched).

    Every rank starts from the same ``train.seed`` (identical initial weights), so without this
    rank r's j-th row would get exactly rank 0's j-th augmentation and dropout mask. Seeding by
    (seed, step, rank) gives each rank its own stream and stays exact when a run resumes.
    """
    if not env.enabled:
        return None
    return (seed * 1_000_003 + step * 7_919 + env.rank * 104_729) % (2**63)


def all_reduce_mean(value: float) -> float:
    """Mean of ``value`` over ranks (a collective: every rank must call it)."""
    if world_size() == 1:
        return value
    # NCCL reduces device tensors only; gloo reduces CPU tensors.
    on_gpu = torch.distributed.get_backend() == "nccl"
    t = torch.tensor([value], dtype=torch.float64, device=torch.cuda.current_device() if on_gpu else "cpu")
    torch.distributed.all_reduce(t)
    return float(t.item() / world_size())


def uses_batch_statistics(model: torch.nn.Module) -> bool:
    """True if ``model`` in training mode has BatchNorm layers that normalise with batch
    statistics: under DDP those are per-rank unless converted to SyncBatchNorm, which torch
    supports on GPUs only. BatchNorm a backbone keeps in eval mode while training (frozen
    statistics, e.g. ``freeze_bn`` of the pretrained MobileNetV2) does not count."""
    was_training = model.training
    model.train()
    try:
        return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())
    finally:
        model.train(was_training)
