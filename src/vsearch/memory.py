"""The memory allocator of batch steps (training, evaluation, embedding): keep what is freed.

No torch at import; a step calls `keep_freed_memory` once, before its first tensor. Long-running
servers do not: they would keep their peak memory for good.
"""

from __future__ import annotations


# Whether `keep_freed_memory` may change the allocator (benchmarks/demo_stages.py turns it off
# for its side-by-side).
KEEP_FREED_MEMORY = True
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


def keep_freed_memory(device="cpu") -> bool:
    """Have glibc keep the memory this process frees for its next allocations, instead of
    handing it back to the kernel, when the step computes on the CPU (``device``: a torch
    device or its name); True when it did (False: another device, not glibc, or turned off).

    A CPU training step allocates and frees the same large activations every step. glibc maps
    each large block afresh and unmaps it on free, so every step page-faults and zero-fills
    hundreds of MB again. With no mmap, no trimming and a padded heap the memory is reused: a
    MobileNetV2 forward and backward pass (bf16, batch 128 at 128 px, 2 cores) took 1.10-1.17 s
    instead of 1.65-1.87 s, with a quarter of the page faults. The price is that the process
    keeps its peak memory until it exits, which suits a batch step (training, evaluation) and
    not a long-running server. The demo's three trainings side by side: 768 s -> 645 s, the same
    losses to the bit, peak memory 3.6 -> 3.9 GB (``benchmarks/demo_stages.py --full --levers
    all_default_heap,all``); its evaluation 51-53 s -> 28-32 s, the same figures.
    """
    if not KEEP_FREED_MEMORY or str(device).split(":")[0] != "cpu":
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
