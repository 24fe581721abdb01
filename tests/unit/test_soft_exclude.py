"""Soft targets that skip a row's own variant group (``soft_exclude``, e.g. ``design_id``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vsearch.config import ConfigError, LossPair, load_config
from vsearch.losses import MultiTowerLoss, info_nce, soft_info_nce


def naive_soft_info_nce(a, b, scale, t, mix, temp, groups):
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


def _features(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, 4, generator=g, dtype=torch.float64), dim=-1) for _ in range(3))


def test_excluded_groups_match_naive_reference():
    a, b, t = _features(6, 5)
    scale = torch.tensor(8.0, dtype=torch.float64)
    groups = [0, 0, 1, 2, 2, 2]
    got = soft_info_nce(a, b, scale, t, 0.4, 0.1, exclude_groups=torch.tensor(groups))
    assert got.item() == pytest.approx(naive_soft_info_nce(a, b, 8.0, t, 0.4, 0.1, groups), rel=1e-9)
    # The exclusion changes the loss; groups of one row each change nothing.
    assert got.item() != pytest.approx(soft_info_nce(a, b, scale, t, 0.4, 0.1).item(), rel=1e-6)
    singletons = soft_info_nce(a, b, scale, t, 0.4, 0.1, exclude_groups=torch.arange(6))
    assert singletons.item() == pytest.approx(soft_info_nce(a, b, scale, t, 0.4, 0.1).item(), rel=1e-12)


def test_a_row_with_only_its_own_group_keeps_a_one_hot_target():
    a, b, t = _features(4, 9)
    scale = torch.tensor(8.0, dtype=torch.float64)
    one_group = soft_info_nce(a, b, scale, t, 0.5, 0.1, exclude_groups=torch.zeros(4, dtype=torch.long))
    assert torch.isfinite(one_group)
    assert one_group.item() == pytest.approx(info_nce(a, b, scale).item(), rel=1e-12)
    for form in ("mix", "negatives"):
        mixed = soft_info_nce(a, b, scale, t, 0.5, 0.1, form, exclude_groups=torch.tensor([0, 0, 0, 1]))
        assert torch.isfinite(mixed), form


def test_multitower_loss_reads_the_groups_and_drops_invalid_rows():
    a, b, t = _features(5, 13)
    pair = LossPair("query_image", "product_image", 1.0, "ii", soft_targets="product_text", soft_mix=0.3, soft_exclude="design_id")
    groups = torch.tensor([0, 0, 1, 1, 2])
    valid = torch.tensor([True, True, True, False, True])
    out = MultiTowerLoss([pair])(
        logit_scale=torch.tensor(8.0, dtype=torch.float64),
        query_image_features=a,
        product_image_features=b,
        product_text_features=t,
        design_id_groups=groups,
        query_image_valid=valid,
    )
    want = soft_info_nce(a[valid], b[valid], torch.tensor(8.0, dtype=torch.float64), t[valid], 0.3, 0.05, exclude_groups=groups[valid])
    assert out["ii_loss"].item() == pytest.approx(want.item(), rel=1e-12)


def test_soft_exclude_needs_soft_targets():
    with pytest.raises(ConfigError, match="soft_exclude"):
        load_config("three_tower", ["loss.pairs=[{name: ii, a: query_image, b: product_image, soft_exclude: design_id}]"])


SOFT = "{name: image_image, a: query_image, b: product_image, soft_targets: product_text, soft_mix: 0.5%s}"


def test_training_passes_each_products_group_to_the_loss(tiny_data, tmp_path):
    """Trained on the tiny preset (designs in two colours each), excluding colour siblings from
    the soft targets changes the image-image loss from the first step on."""
    from vsearch.training.loop import read_metrics_log, train

    curves = []
    for name, extra in (("plain", ""), ("exclude", ", soft_exclude: design_id")):
        cfg = load_config("tiny", ["train.max_steps=3", f"loss.pairs=[{SOFT % extra}]"])
        train(cfg, tiny_data, tmp_path / name, progress=False)
        curves.append([r["image_image_loss"] for r in read_metrics_log(tmp_path / name)])
    assert len(curves[1]) == 3 and all(math.isfinite(x) for x in curves[1])
    assert curves[1][0] != pytest.approx(curves[0][0], rel=1e-6)


def test_an_unknown_exclude_column_names_the_catalog(tiny_data, tmp_path):
    from vsearch.schema import DataError
    from vsearch.training.loop import train

    cfg = load_config("tiny", ["train.max_steps=1", f"loss.pairs=[{SOFT % ', soft_exclude: no_such_column'}]"])
    with pytest.raises(DataError, match=r"catalog.parquet: .*'no_such_column' is not in the catalog"):
        train(cfg, tiny_data, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()  # nothing is published
