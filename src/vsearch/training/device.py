"""The accelerator contract between the pipeline and its steps (no torch at import: the
pipeline compiler reads ``REQUIRE_CUDA_ENV``).

A step given an accelerator (``pipelines.wiring``: ``gpu.steps``) runs the GPU image with
``VSEARCH_REQUIRE_CUDA=1``; its entry point calls `require_cuda` first. Without it a CPU-only
torch, a missing driver or a GPU held by another process meant ``train.device: auto`` trained
on the CPU while the node's GPU sat idle, and nobody was told.
"""

from __future__ import annotations

import os

REQUIRE_CUDA_ENV = "VSEARCH_REQUIRE_CUDA"


def require_cuda() -> None:
    """Raise `vsearch.config.ConfigError` (one line) when ``VSEARCH_REQUIRE_CUDA`` is set (not
    ``0``) and torch sees no CUDA device; return otherwise."""
    if os.environ.get(REQUIRE_CUDA_ENV, "") in ("", "0"):
        return
    import torch

    if torch.cuda.is_available():
        return
    from vsearch.config import ConfigError

    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build: not the GPU image"
    raise ConfigError(f"{REQUIRE_CUDA_ENV}=1 (this step was given an accelerator) but torch {torch.__version__} "
                      f"({build}) sees no CUDA device: refusing to run on the CPU")


def fast_bf16() -> bool:
    """True where bf16 autocast trains faster than fp32: a CUDA device, or a CPU that computes
    bf16 natively (avx512_bf16 or AMX tiles). Elsewhere oneDNN emulates bf16, slower than fp32."""
    import torch

    if torch.cuda.is_available():
        return True
    native = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in native)
