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


# Whether `keep_freed_memory` may change the allocator (benchmarks/demo_stages.py turns it off
# for its side-by-side).
KEEP_FREED_MEMORY = True
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


def keep_freed_memory() -> bool:
    """Have glibc keep the memory this process frees for its next allocations, instead of
    handing it back to the kernel; True when it did (False: not glibc, or turned off).

    A CPU training step allocates and frees the same large activations every step. glibc maps
    each large block afresh and unmaps it on free, so every step page-faults and zero-fills
    hundreds of MB again. With no mmap, no trimming and a padded heap the memory is reused: a
    MobileNetV2 forward and backward pass (bf16, batch 128 at 128 px, 2 cores) took 1.10-1.17 s
    instead of 1.65-1.87 s, with a quarter of the page faults. The price is that the process
    keeps its peak memory until it exits, which suits a batch step (training, evaluation) and
    not a long-running server.
    """
    if not KEEP_FREED_MEMORY:
        return False
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(param, value) == 1
               for param, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 1 << 40), (_M_TOP_PAD, 256 << 20)))
