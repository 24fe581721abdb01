"""Loss levers that were measured and not kept (experiments/model-quality-log.md), as they were.

Removed from the package in issue 22 (``LossPair.soft_form``, ``soft_exclude``,
``start_step``/``ramp_steps``, ``logit_scale`` and ``LossConfig.reference_text``); the training
loop no longer feeds them (reference title features, per-product groups, the step). The code is
kept here so the diagnostics and the record's tests still run; to rerun a screen that used one,
check out the last commit that had them in the package (experiments/README.md).

Nothing in ``vsearch`` imports this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F

SOFT_FORMS = ("mix", "negatives")


def soft_info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    target_features: torch.Tensor,
    mix: float,
    temperature: float,
    form: str = "mix",
    exclude_groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE with soft in-batch targets, in either form, with optional exclusion.

    - ``form="mix"``: targets = (1 - mix) * one-hot + mix * soft (the kept form:
      ``vsearch.losses.soft_info_nce``).
    - ``form="negatives"`` (not kept): (1 - mix) * InfoNCE + mix * cross-entropy of the soft
      targets against the softmax over the negatives only (column i left out).
    - ``exclude_groups`` (``soft_exclude``, not kept): (N,) integer group per row; rows of the
      same group get no soft mass from each other. A row left with no other row keeps a
      one-hot target.

    Args:
        a, b: (N, D) L2-normalised features, row i of each is the positive pair.
        logit_scale: scalar inverse temperature of the logits.
        target_features: (N, E) L2-normalised features defining which rows are alike.
        mix: share of the soft part in [0, 1].
        temperature: sharpness of the soft targets.

    Returns:
        Scalar: mean cross-entropy of both directions, natural log units.
    """
    soft = soft_targets(target_features.to(a.dtype), temperature, exclude_groups)
    return soft_cross_entropy(logit_scale * a @ b.t(), soft, mix, form)


@torch.no_grad()
def soft_targets(target_features: torch.Tensor, temperature: float, exclude_groups: torch.Tensor | None = None) -> torch.Tensor:
    """(N, N) soft targets: row i is the softmax over j != i (and, with ``exclude_groups``,
    over j of another group) of ``target_features[i] . target_features[j] / temperature``; a row
    with no such j is all zeros. No gradient."""
    masked = torch.eye(target_features.shape[0], device=target_features.device, dtype=torch.bool)
    if exclude_groups is not None:
        masked = masked | (exclude_groups[:, None] == exclude_groups[None, :])
    tf = target_features.detach()
    # A fully masked row's softmax is NaN; it becomes zeros (no soft mass, one-hot target).
    return (tf @ tf.t() / temperature).masked_fill(masked, float("-inf")).softmax(dim=1).nan_to_num(0.0)


def soft_cross_entropy(logits: torch.Tensor, soft: torch.Tensor, mix: float, form: str = "mix") -> torch.Tensor:
    """The loss of ``soft_info_nce`` from its (N, N) logits and (N, N) soft targets (rows sum
    to 1 or are all zero, zero diagonal; used for both directions). Scalar, natural log units."""
    eye = torch.eye(logits.shape[0], device=logits.device, dtype=torch.bool)
    if form == "negatives":
        labels = torch.arange(logits.shape[0], device=logits.device)
        hard = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
        # The positive's column is left out of the softmax; its target is 0, and 0 * -inf would
        # be NaN, so the masked entries are set to 0 after the log-softmax.
        relational = 0.0
        for per_row in (logits, logits.t()):
            log_p = per_row.masked_fill(eye, float("-inf")).log_softmax(dim=1).masked_fill(eye, 0.0)
            relational = relational - 0.5 * (soft * log_p).sum(dim=1).mean()
        return (1.0 - mix) * hard + mix * relational
    has_soft = (soft.sum(dim=1, keepdim=True) > 0).to(logits.dtype)  # 0 for a row with no soft targets
    targets = (1.0 - mix * has_soft) * eye.to(logits.dtype) + mix * soft
    loss_a = -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
    loss_b = -(targets * logits.t().log_softmax(dim=1)).sum(dim=1).mean()  # row i's targets serve b_i too
    return 0.5 * (loss_a + loss_b)


def schedule(step: int, start_step: int = 0, ramp_steps: int = 0) -> float:
    """Per-term schedule (not kept): multiplier in [0, 1] of a term's weight at 0-based
    ``step``: 0 before ``start_step``, then a linear ramp to 1 over ``ramp_steps`` steps."""
    if step < start_step:
        return 0.0
    if ramp_steps <= 0:
        return 1.0
    return min(1.0, (step - start_step + 1) / ramp_steps)


@torch.no_grad()
def encode_reference_titles(cfg, titles: Sequence[str], max_length: int, device: torch.device | str = "cpu", batch_size: int = 256) -> torch.Tensor:
    """Frozen reference text features (``loss.reference_text``, not kept): ``titles`` through a
    frozen pretrained text encoder with no projection.

    Args:
        cfg: a ``vsearch.config.BackboneConfig`` whose ``pretrained`` names the encoder.
        titles: T strings.
        max_length: token limit per title.

    Returns:
        (T, E) float32 L2-normalised features, row i for ``titles[i]``.
    """
    from vsearch.data.dataset import Collator
    from vsearch.models.tokenizer import load_tokenizer
    from vsearch.models.towers import Encoder, backbone_width, build_backbone

    if not cfg.pretrained:
        raise ValueError("reference text: set `pretrained` (a frozen pretrained text encoder)")
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


# What each retired key held when it was off; run_config.yaml files written before issue 22
# carry them (every LossPair had all five, every LossConfig a reference_text).
RETIRED_PAIR_KEYS = {"soft_form": "mix", "soft_exclude": "", "start_step": 0, "ramp_steps": 0, "logit_scale": None}


def load_run_config(path):
    """A model folder's run_config.yaml as a RunConfig, also one written before the levers were
    retired: their keys are dropped where they were off; a run that used one is refused."""
    import yaml

    from vsearch.config import ConfigError, config_from_dict

    raw = yaml.safe_load(open(path))
    loss = raw.get("loss", {})
    reference = loss.pop("reference_text", None)
    if reference and reference.get("pretrained"):
        raise ConfigError(f"{path}: trained with loss.reference_text (retired); use the commit in experiments/README.md")
    for pair in loss.get("pairs", []):
        for key, off in RETIRED_PAIR_KEYS.items():
            if pair.pop(key, off) != off:
                raise ConfigError(f"{path}: loss pair '{pair.get('name')}' used {key} (retired); use the commit in experiments/README.md")
    return config_from_dict(raw)
