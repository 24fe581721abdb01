"""Frozen reference text features: soft targets that keep a pretrained encoder's geometry.

With ``loss.reference_text`` set, the training loop encodes every distinct training title once
with that frozen encoder (its own tokenizer, no projection) and hands the loss the rows of the
batch as ``"reference_text_features"``. The model's own text tower may then be fine-tuned for
the image-title terms while soft targets (``soft_targets: reference_text``) still say which
products the pretrained encoder finds alike. Nothing of it is saved with the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from vsearch.config import BackboneConfig


@torch.no_grad()
def encode_reference_titles(
    cfg: BackboneConfig,
    titles: Sequence[str],
    max_length: int,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> torch.Tensor:
    """Encode ``titles`` with the frozen pretrained text encoder ``cfg``.

    Args:
        cfg: the reference backbone; ``pretrained`` names the folder (``package:`` refs work),
            ``pooling`` as for the model's towers. It is always frozen, with no projection.
        titles: T strings.
        max_length: token limit per title (the model's ``max_text_length``).
        device: where to encode and where the result lives.
        batch_size: titles per forward pass.

    Returns:
        (T, E) float32 L2-normalised features, row i for ``titles[i]``; E is the encoder's width.
    """
    from vsearch.data.dataset import Collator
    from vsearch.models.tokenizer import load_tokenizer
    from vsearch.models.towers import Encoder, backbone_width, build_backbone

    if not cfg.pretrained:
        raise ValueError("loss.reference_text: set `pretrained` (a frozen pretrained text encoder)")
    backbone = build_backbone(dataclasses.replace(cfg, freeze=True), "text")
    encoder = Encoder(backbone, backbone_width(backbone), cfg.pooling, "none").to(device).eval()
    collator = Collator([], load_tokenizer(cfg.pretrained), max_length)
    parts = []
    for start in range(0, len(titles), batch_size):
        tokens = collator.tokenize(titles[start : start + batch_size])
        parts.append(encoder(**{k: v.to(device) for k, v in tokens.items()}).float())
    if not parts:
        return torch.zeros(0, backbone_width(backbone), device=device)
    return torch.cat(parts)
