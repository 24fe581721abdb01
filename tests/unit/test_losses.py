import math

import pytest
import torch
import torch.nn.functional as F

from vsearch.config import LossPair
from vsearch.losses import MultiTowerLoss, info_nce


def naive_info_nce(a, b, scale):
    """Loops over rows: -log softmax of the positive, both directions, averaged."""
    n = a.shape[0]
    total_ab, total_ba = 0.0, 0.0
    for i in range(n):
        logits_ab = [scale * float(a[i] @ b[j]) for j in range(n)]
        logits_ba = [scale * float(b[i] @ a[j]) for j in range(n)]
        total_ab += -(logits_ab[i] - math.log(sum(math.exp(x) for x in logits_ab)))
        total_ba += -(logits_ba[i] - math.log(sum(math.exp(x) for x in logits_ba)))
    return 0.5 * (total_ab / n + total_ba / n)


@pytest.mark.parametrize("n,d,scale", [(2, 3, 1.0), (7, 16, 14.3), (16, 8, 50.0)])
def test_info_nce_matches_naive_reference(n, d, scale):
    g = torch.Generator().manual_seed(n * d)
    a = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    b = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    got = info_nce(a, b, torch.tensor(scale, dtype=torch.float64))
    assert got.item() == pytest.approx(naive_info_nce(a, b, scale), rel=1e-9)


def test_info_nce_is_symmetric_in_its_arguments():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(5, 4, generator=g), dim=-1)
    b = F.normalize(torch.randn(5, 4, generator=g), dim=-1)
    # The symmetric form does not depend on argument order.
    assert info_nce(a, b, torch.tensor(10.0)).item() == pytest.approx(info_nce(b, a, torch.tensor(10.0)).item(), rel=1e-6)


def test_perfect_alignment_gives_low_loss_and_random_gives_log_n():
    eye = torch.eye(8)
    low = info_nce(eye, eye, torch.tensor(100.0)).item()
    assert low < 1e-6
    same = torch.ones(8, 4) / 2.0  # every pair equally similar -> loss = log(N)
    assert info_nce(same, same, torch.tensor(10.0)).item() == pytest.approx(math.log(8), rel=1e-6)


def test_multi_tower_loss_names_weights_and_masks():
    g = torch.Generator().manual_seed(1)
    feats = {k: F.normalize(torch.randn(6, 4, generator=g), dim=-1) for k in ("query_image", "product_image", "query_text")}
    valid = torch.tensor([True, True, False, True, False, True])
    pairs = [LossPair("query_image", "product_image", 1.0, "ii"), LossPair("query_text", "product_image", 0.25, "ti")]
    loss = MultiTowerLoss(pairs)
    scale = torch.tensor(10.0)
    out = loss(
        logit_scale=scale,
        query_image_features=feats["query_image"],
        product_image_features=feats["product_image"],
        query_text_features=feats["query_text"],
        query_text_valid=valid,
    )
    assert set(out) == {"ii_loss", "ti_loss"}
    assert out["ii_loss"].item() == pytest.approx(info_nce(feats["query_image"], feats["product_image"], scale).item())
    expected = 0.25 * info_nce(feats["query_text"][valid], feats["product_image"][valid], scale)
    assert out["ti_loss"].item() == pytest.approx(expected.item())


def test_term_with_fewer_than_two_valid_rows_is_zero_but_differentiable():
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, 3)
    loss = MultiTowerLoss([LossPair("query_text", "product_image")])
    out = loss(
        logit_scale=torch.tensor(1.0),
        query_text_features=a,
        product_image_features=b,
        query_text_valid=torch.tensor([True, False, False, False]),
    )
    value = out["query_text_product_image_loss"]
    assert value.item() == 0.0
    value.backward()
    assert a.grad is not None


def test_scheduled_terms_start_late_and_ramp_linearly():
    pair = LossPair("query_image", "product_image", 2.0, "ii", start_step=10, ramp_steps=4)
    loss = MultiTowerLoss([pair])
    factors = []
    for step in (0, 9, 10, 11, 13, 50):
        loss.set_step(step)
        factors.append(loss.schedule(pair))
    assert factors == [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]
    g = torch.Generator().manual_seed(3)
    a, b = (F.normalize(torch.randn(4, 3, generator=g), dim=-1) for _ in range(2))
    loss.set_step(11)
    out = loss(logit_scale=torch.tensor(5.0), query_image_features=a, product_image_features=b)
    assert out["ii_loss"].item() == pytest.approx(2.0 * 0.5 * info_nce(a, b, torch.tensor(5.0)).item())


def test_a_pair_with_a_fixed_temperature_ignores_the_learnt_one():
    g = torch.Generator().manual_seed(4)
    a, b = (F.normalize(torch.randn(6, 3, generator=g), dim=-1) for _ in range(2))
    loss = MultiTowerLoss([LossPair("query_image", "product_text", 1.0, "it", logit_scale=5.0), LossPair("query_image", "product_image", 1.0, "ii")])
    out = loss(logit_scale=torch.tensor(20.0), query_image_features=a, product_text_features=b, product_image_features=b)
    assert out["it_loss"].item() == pytest.approx(info_nce(a, b, torch.tensor(5.0)).item())
    assert out["ii_loss"].item() == pytest.approx(info_nce(a, b, torch.tensor(20.0)).item())


def naive_soft_info_nce(a, b, scale, t, mix, temp):
    n = a.shape[0]
    total = 0.0
    for direction in (0, 1):
        for i in range(n):
            sims = [float(t[i] @ t[j]) / temp for j in range(n) if j != i]
            z = sum(math.exp(x) for x in sims)
            soft = {j: math.exp(float(t[i] @ t[j]) / temp) / z for j in range(n) if j != i}
            logits = [scale * float((a[i] @ b[j]) if direction == 0 else (b[i] @ a[j])) for j in range(n)]
            lse = math.log(sum(math.exp(x) for x in logits))
            for j in range(n):
                target = (1 - mix) * (i == j) + mix * soft.get(j, 0.0)
                total -= target * (logits[j] - lse)
    return total / (2 * n)


def test_soft_info_nce_matches_naive_reference_and_reduces_to_info_nce():
    from vsearch.losses import soft_info_nce

    g = torch.Generator().manual_seed(7)
    a, b, t = (F.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=-1) for _ in range(3))
    got = soft_info_nce(a, b, torch.tensor(8.0, dtype=torch.float64), t, 0.4, 0.1)
    assert got.item() == pytest.approx(naive_soft_info_nce(a, b, 8.0, t, 0.4, 0.1), rel=1e-9)
    plain = soft_info_nce(a, b, torch.tensor(8.0, dtype=torch.float64), t, 0.0, 0.1)
    assert plain.item() == pytest.approx(info_nce(a, b, torch.tensor(8.0, dtype=torch.float64)).item(), rel=1e-12)


def test_soft_targets_pull_text_similar_rows_together():
    """With soft targets, the loss prefers b-rows alike (in text) to the positive."""
    from vsearch.losses import soft_info_nce

    t = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=-1)  # rows 0 and 1 alike
    a = F.normalize(torch.tensor([[1.0, 0.0, 0.0]]).repeat(3, 1) + torch.eye(3), dim=-1)
    near = F.normalize(torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]), dim=-1)
    far = F.normalize(torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.5, 0.0, 1.0]]), dim=-1)
    scale = torch.tensor(5.0)
    # `near` puts rows 0 and 1 close (as the text does); `far` puts 0 near 2 instead.
    assert soft_info_nce(a, near, scale, t, 0.5, 0.05) < soft_info_nce(a, far, scale, t, 0.5, 0.05)


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


def test_negatives_form_matches_naive_reference():
    from vsearch.losses import soft_info_nce

    g = torch.Generator().manual_seed(11)
    a, b, t = (F.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=-1) for _ in range(3))
    scale = torch.tensor(8.0, dtype=torch.float64)
    got = soft_info_nce(a, b, scale, t, 0.3, 0.1, form="negatives")
    assert got.item() == pytest.approx(naive_negatives_soft_info_nce(a, b, 8.0, t, 0.3, 0.1), rel=1e-9)
    assert torch.isfinite(got)


def test_negatives_form_leaves_the_positive_target_whole():
    """Raising the positives' logits always lowers the negatives form and leaves its soft part
    unchanged; the mix form stops rewarding it once p(positive) passes about 1 - mix."""
    from vsearch.losses import soft_cross_entropy

    g = torch.Generator().manual_seed(3)
    n = 6
    logits = torch.randn(n, n, generator=g, dtype=torch.float64) * 3
    t = F.normalize(torch.randn(n, 4, generator=g, dtype=torch.float64), dim=-1)
    soft = (t @ t.t() / 0.1).masked_fill(torch.eye(n, dtype=torch.bool), float("-inf")).softmax(dim=1)
    boosts = [0.0, 2.0, 4.0, 8.0, 16.0]
    boosted = [logits + d * torch.eye(n, dtype=torch.float64) for d in boosts]
    neg = [soft_cross_entropy(x, soft, 0.5, "negatives").item() for x in boosted]
    rel = [soft_cross_entropy(x, soft, 1.0, "negatives").item() for x in boosted]
    mix = [soft_cross_entropy(x, soft, 0.5, "mix").item() for x in boosted]
    assert all(x > y for x, y in zip(neg, neg[1:])), neg
    assert rel == pytest.approx([rel[0]] * len(rel), rel=1e-12)
    assert mix[-1] > min(mix), mix  # past p(positive) = 1 - mix the mix form pushes back


def test_soft_form_is_validated():
    from vsearch.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="soft_form"):
        pair = "{name: ii, a: query_image, b: product_image, soft_targets: product_text, soft_mix: 0.3, soft_form: both}"
        load_config("three_tower", [f"loss.pairs=[{pair}]"])
