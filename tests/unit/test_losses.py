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
