"""The training task: the model and its loss joined in one module (after open_clip's ``task/``).

The training loop calls ``task(batch)`` and gets the loss terms back; DDP wraps the task,
so the loop never wires model outputs into the loss itself.
"""

from __future__ import annotations

import torch
from torch import nn

from vsearch.config import LossConfig
from vsearch.losses import MultiTowerLoss
from vsearch.models.multitower import MultiTowerModel


class TrainingTask(nn.Module):
    """Owns the MultiTowerModel and its MultiTowerLoss; ``forward(batch)`` returns the loss terms.

    The model runs under bf16 autocast when ``use_bf16``; the loss always runs in float32.
    Under bf16 the image towers' weights and pixels are ``channels_last``, the layout oneDNN's
    and cuDNN's fast bf16 convolutions want (MobileNetV2 fwd+bwd with avx512_bf16: 2.0x over fp32
    with it, 1.5x without); the values, and what is saved (contiguous), are the same.
    """

    def __init__(self, model: MultiTowerModel, loss: LossConfig, use_bf16: bool = False):
        super().__init__()
        self.model = model
        self.loss = MultiTowerLoss(loss.pairs)
        self.use_bf16 = use_bf16
        if use_bf16:
            model.to(memory_format=torch.channels_last)  # only 4-D (conv) weights change layout

    @property
    def term_names(self) -> list[str]:
        return self.loss.term_names

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """The weighted loss terms by name (``"<pair>_loss"``), their sum as ``"loss"`` and the
        model's ``"logit_scale"``."""
        device_type = next(self.model.parameters()).device.type
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=self.use_bf16):
            features = self.model(_channels_last(batch) if self.use_bf16 else batch)
        terms = self.loss(**{k: (v.float() if torch.is_floating_point(v) else v) for k, v in features.items()})
        return {**terms, "loss": sum(terms.values()), "logit_scale": features["logit_scale"]}


def _channels_last(batch: dict) -> dict:
    """The batch with every image tensor (B, C, H, W) in ``channels_last``; other entries as they are."""
    return {k: v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v) and v.dim() == 4 else v
            for k, v in batch.items()}
