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
    form: str = "mix",
    exclude_groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE with soft in-batch targets from another feature's similarity.

    Soft targets for row i: softmax over j != i of ``target_features[i] . target_features[j]
    / temperature`` (no gradient through them).

    - ``form="mix"``: targets = (1 - mix) * one-hot + mix * soft, against the softmax over all
      columns (the positive's own target shrinks to about 1 - mix).
    - ``form="negatives"``: (1 - mix) * InfoNCE + mix * cross-entropy of the soft targets
      against the softmax over the negatives only (column i left out). The two parts are
      independent: the first only ranks the positive above the rest, the second only orders
      the rest, so the text shapes what comes after the true product without lowering it.

    Args:
        a, b: (N, D) L2-normalised features, row i of each is the positive pair.
        logit_scale: scalar inverse temperature of the logits.
        target_features: (N, E) L2-normalised features defining which rows are alike.
        mix: share of the soft part in [0, 1]; 0 gives ``info_nce``.
        temperature: sharpness of the soft targets.
        form: ``"mix"`` or ``"negatives"`` (above).
        exclude_groups: (N,) integer group per row (e.g. the product's design); rows of the
            same group get no soft mass from each other. A row left with no other row keeps a
            one-hot target (its soft row is all zero).

    Returns:
        Scalar: mean cross-entropy of both directions against those targets.
    """
    soft = soft_targets(target_features.to(a.dtype), temperature, exclude_groups)
    return soft_cross_entropy(logit_scale * a @ b.t(), soft, mix, form)


@torch.no_grad()
def soft_targets(target_features: torch.Tensor, temperature: float, exclude_groups: torch.Tensor | None = None) -> torch.Tensor:
    """(N, N) soft targets of ``soft_info_nce``: row i is the softmax over j != i (and, with
    ``exclude_groups``, over j of another group) of ``target_features[i] . target_features[j] /
    temperature``; a row with no such j is all zeros. No gradient."""
    masked = torch.eye(target_features.shape[0], device=target_features.device, dtype=torch.bool)
    if exclude_groups is not None:
        masked = masked | (exclude_groups[:, None] == exclude_groups[None, :])
    tf = target_features.detach()
    # A fully masked row's softmax is NaN; it becomes zeros (no soft mass, one-hot target).
    return (tf @ tf.t() / temperature).masked_fill(masked, float("-inf")).softmax(dim=1).nan_to_num(0.0)


def soft_cross_entropy(logits: torch.Tensor, soft: torch.Tensor, mix: float, form: str = "mix") -> torch.Tensor:
    """The loss of ``soft_info_nce`` from its logits.

    Args:
        logits: (N, N) logits of row a_i against column b_j; the diagonal holds the positives.
        soft: (N, N) soft targets, rows sum to 1 (or are all zero: that row keeps a one-hot
            target), zero diagonal; used for both directions.
        mix: share of the soft part in [0, 1].
        form: ``"mix"`` or ``"negatives"`` (see ``soft_info_nce``).

    Returns:
        Scalar, mean over rows and both directions, natural log units.
    """
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
        self.step = 0

    def set_step(self, step: int) -> None:
        """Training step (0-based) for scheduled terms (``start_step`` / ``ramp_steps``)."""
        self.step = step

    def schedule(self, pair: LossPair) -> float:
        """Multiplier in [0, 1] of ``pair.weight`` at the current step."""
        if self.step < pair.start_step:
            return 0.0
        if pair.ramp_steps <= 0:
            return 1.0
        return min(1.0, (self.step - pair.start_step + 1) / pair.ramp_steps)

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
            groups = get(f"{pair.soft_exclude}_groups") if target is not None and pair.soft_exclude else None
            if valid is not None:
                a, b = a[valid], b[valid]
                target = target[valid] if target is not None else None
                groups = groups[valid] if groups is not None else None
            if a.shape[0] < 2:
                # No negatives: a zero that keeps the graph (and DDP's gradient buckets) intact.
                losses[f"{pair.name}_loss"] = (model_out[f"{pair.a}_features"].sum() * 0.0)
                continue
            scale = logit_scale if pair.logit_scale is None else logit_scale.new_tensor(pair.logit_scale)
            if target is not None:
                term = soft_info_nce(a, b, scale, target, pair.soft_mix, pair.soft_temperature, pair.soft_form, groups)
            else:
                term = info_nce(a, b, scale)
            losses[f"{pair.name}_loss"] = pair.weight * self.schedule(pair) * term
        return losses
