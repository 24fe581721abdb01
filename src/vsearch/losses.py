"""InfoNCE and the multi-tower loss: named terms built from configured feature pairs.

The loss takes ``**model_out`` (see ``MultiTowerModel.forward``) and returns one
``"<pair>_loss"`` entry per configured pair, already weighted; the loop sums and logs them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vsearch.config import LossPair
from vsearch.collectives import gather_with_grad


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives.

    Args:
        a: (N, D) L2-normalised features; row i is the positive of ``b[i]``.
        b: (N, D) L2-normalised features.
        logit_scale: scalar, inverse temperature (``exp`` of the learnt log-scale).

    Returns:
        Scalar: mean of cross-entropy(a -> b) and cross-entropy(b -> a), natural log units.
    """
    logits_per_a = logit_scale * a @ b.t()
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits_per_a, labels) + F.cross_entropy(logits_per_a.t(), labels))


def soft_info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    target_features: torch.Tensor,
    mix: float,
    temperature: float,
) -> torch.Tensor:
    """Symmetric InfoNCE with soft in-batch targets from another feature's similarity.

    Soft targets for row i: softmax over j != i of ``target_features[i] . target_features[j]
    / temperature`` (no gradient through them); the targets are (1 - mix) * one-hot + mix * soft,
    against the softmax over all columns (the positive's own target shrinks to about 1 - mix).

    Args:
        a, b: (N, D) L2-normalised features, row i of each is the positive pair; N >= 2.
        logit_scale: scalar inverse temperature of the logits.
        target_features: (N, E) L2-normalised features defining which rows are alike.
        mix: share of the soft part in [0, 1]; 0 gives ``info_nce``.
        temperature: sharpness of the soft targets.

    Returns:
        Scalar: mean cross-entropy of both directions against those targets, natural log units.
    """
    soft = soft_targets(target_features.to(a.dtype), temperature)
    return soft_cross_entropy(logit_scale * a @ b.t(), soft, mix)


@torch.no_grad()
def soft_targets(target_features: torch.Tensor, temperature: float) -> torch.Tensor:
    """(N, N) soft targets of ``soft_info_nce``: row i is the softmax over j != i of
    ``target_features[i] . target_features[j] / temperature``; zero diagonal. No gradient."""
    own = torch.eye(target_features.shape[0], device=target_features.device, dtype=torch.bool)
    tf = target_features.detach()
    return (tf @ tf.t() / temperature).masked_fill(own, float("-inf")).softmax(dim=1)


def soft_cross_entropy(logits: torch.Tensor, soft: torch.Tensor, mix: float) -> torch.Tensor:
    """The loss of ``soft_info_nce`` from its logits.

    Args:
        logits: (N, N) logits of row a_i against column b_j; the diagonal holds the positives.
        soft: (N, N) soft targets, rows sum to 1, zero diagonal; used for both directions.
        mix: share of the soft part in [0, 1].

    Returns:
        Scalar, mean over rows and both directions, natural log units.
    """
    eye = torch.eye(logits.shape[0], device=logits.device, dtype=logits.dtype)
    # 1 - mix computed in the logits' precision: float32(1 - float32(mix)), as every model was trained.
    targets = (1.0 - logits.new_tensor(mix)) * eye + mix * soft
    loss_a = -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
    loss_b = -(targets * logits.t().log_softmax(dim=1)).sum(dim=1).mean()  # row i's targets serve b_i too
    return 0.5 * (loss_a + loss_b)


class MultiTowerLoss(nn.Module):
    """Sum of weighted InfoNCE terms over configured pairs of feature keys.

    Pairs name towers ("query_image", "product_image", "product_text", "query_text") or
    "fused_query". Rows whose ``"<key>_valid"`` mask is False (e.g. empty query text) are
    dropped from that pair's term. Features are all-gathered across ranks first (one helper),
    so negatives come from the global batch.
    """

    def __init__(self, pairs: list[LossPair]):
        super().__init__()
        self.pairs = list(pairs)

    @property
    def term_names(self) -> list[str]:
        return [f"{p.name}_loss" for p in self.pairs]

    def forward(self, logit_scale: torch.Tensor, **model_out: torch.Tensor) -> dict[str, torch.Tensor]:
        gathered: dict[str, torch.Tensor] = {}

        def get(key: str) -> torch.Tensor:
            if key not in gathered:
                gathered[key] = gather_with_grad(model_out[key])
            return gathered[key]

        losses = {}
        for pair in self.pairs:
            a, b = get(f"{pair.a}_features"), get(f"{pair.b}_features")
            valid = None
            for end in (pair.a, pair.b):
                if f"{end}_valid" in model_out:
                    mask = get(f"{end}_valid").bool()
                    valid = mask if valid is None else valid & mask
            target = get(f"{pair.soft_targets}_features") if pair.soft_targets and pair.soft_mix > 0 else None
            if valid is not None:
                a, b = a[valid], b[valid]
                target = target[valid] if target is not None else None
            if a.shape[0] < 2:
                # No negatives: a zero that keeps the graph (and DDP's gradient buckets) intact.
                losses[f"{pair.name}_loss"] = (model_out[f"{pair.a}_features"].sum() * 0.0)
                continue
            if target is not None:
                term = soft_info_nce(a, b, logit_scale, target, pair.soft_mix, pair.soft_temperature)
            else:
                term = info_nce(a, b, logit_scale)
            losses[f"{pair.name}_loss"] = pair.weight * term
        return losses
