"""The collectives the loss needs: the world size and the one all-gather for negatives.

Below ``losses`` and ``training`` (the loss gathers features across ranks; the loop starts the
process group, ``vsearch.training.distributed``). One process never touches
``torch.distributed``: both helpers short-circuit when the world size is 1.
"""

from __future__ import annotations

import torch


def world_size() -> int:
    """The number of processes in the group (1 without one)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather ``tensor`` (B, ...) from every rank into (world * B, ...), in rank order.

    Gradients flow back through the gather (``torch.distributed.nn.all_gather``), so every
    rank computes the loss L over the global batch. Its backward sums the gradients of all
    ranks' (identical) losses, giving ``world * dL/d tensor`` on each rank's own rows; DDP's
    averaging divides by ``world`` again, so parameter gradients equal those of one process
    on the global batch (not ``world`` times them). One process: returns ``tensor``.
    """
    if world_size() == 1:
        return tensor
    import warnings

    from torch.distributed.nn import all_gather

    # torch 2.13 marks this public op deprecated in favour of a private functional-collectives
    # API; its autograd (gradients summed over ranks in backward) is the one DDP parity is
    # tested with (tests/integration/test_ddp.py), so keep it and do not print that per rank.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        return torch.cat(all_gather(tensor.contiguous()), dim=0)
