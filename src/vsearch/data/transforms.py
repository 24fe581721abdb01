"""Training-time image augmentation on batches (kornia: runs on CPU and GPU alike).

No torchvision here: its PyPI wheels are CUDA builds that break CPU torch (shared NOTES).
Augmentation draws from the global torch RNG, whose state the checkpoints save, so a
resumed run sees the same augmented batches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# No horizontal flip: brand marks sit at a brand-specific spot, a flip would move them.
LEVELS = ("none", "light", "strong")


def build_augment(level: str, image_size: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Return a batch augmentation (B, 3, S, S) float in [0, 1] -> same shape, or None.

    ``light``: mild crop/scale, rotation, colour jitter. ``strong``: street-like views of a
    clean render: smaller scale, more rotation, stronger colour jitter, blur.
    """
    if level == "none":
        return None
    import kornia.augmentation as K

    if level == "light":
        ops = [
            K.RandomResizedCrop((image_size, image_size), scale=(0.7, 1.0), ratio=(0.9, 1.1), p=1.0),
            K.RandomRotation(degrees=10.0, p=0.5),
            K.ColorJitter(0.15, 0.15, 0.1, 0.02, p=0.8),
        ]
    elif level == "strong":
        ops = [
            K.RandomAffine(degrees=20.0, translate=(0.15, 0.15), scale=(0.55, 1.0), p=1.0, padding_mode="border"),
            K.RandomResizedCrop((image_size, image_size), scale=(0.6, 1.0), ratio=(0.85, 1.15), p=0.5),
            K.ColorJitter(0.25, 0.25, 0.15, 0.03, p=0.8),
            K.RandomGaussianBlur((3, 3), (0.1, 1.0), p=0.3),
            K.RandomErasing(scale=(0.02, 0.15), ratio=(0.3, 3.3), p=0.3),
        ]
    else:
        raise ValueError(f"unknown augmentation level '{level}' (known: {', '.join(LEVELS)})")
    return K.AugmentationSequential(*ops)
