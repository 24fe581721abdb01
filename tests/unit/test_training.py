import json
import shutil

import re

import numpy as np
import pytest
import torch

from vsearch import schema
from vsearch.config import ConfigError, load_config
from vsearch.evaluation.evaluate import embed_images, load_eval_set
from vsearch.lineage import code_version
from vsearch.models import build_model, load_model
from vsearch.training import loop
from vsearch.training.loop import read_metrics_log, train


def test_loss_terms_are_exactly_those_the_config_names(tiny_models):
    for name, preset in (("image_only", "tiny_image_only"), ("three_tower", "tiny"), ("four_tower", "tiny_four_tower")):
        expected = {f"{p.name}_loss" for p in load_config(preset).loss.pairs}
        records = read_metrics_log(tiny_models[name])
        assert records, name
        logged = {k for k in records[0] if k.endswith("_loss")}
        assert logged == expected, name
        for r in records:
            assert r["loss"] == pytest.approx(sum(r[k] for k in expected), rel=1e-5)


def test_four_tower_starts_from_the_three_tower_weights(tiny_models):
    three, _ = load_model(tiny_models["three_tower"])
    summary = json.loads((tiny_models["four_tower"] / "train_summary.json").read_text())
    assert summary["init"] == str(tiny_models["three_tower"])
    assert summary["code_version"] == code_version()  # the model card says which code trained it
    four, _ = load_model(tiny_models["four_tower"])
    assert four.cfg.towers[-1] == schema.QUERY_TEXT
    # Fine-tuned from the 3-tower weights, not from scratch: parameters moved little.
    fresh = build_model(load_config("tiny_four_tower").model, load_model(tiny_models["three_tower"])[1])
    p3, p4, p0 = (torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (three, four, fresh))
    assert (p4 - p3).norm() < 0.5 * (p0 - p3).norm()


def test_resume_after_a_crash_continues_the_same_loss_curve(tiny_data, tmp_path, monkeypatch, caplog):
    overrides = ["train.max_steps=8", "train.checkpoint_every=3", "data.augment=light", "data.augment_product=strong"]
    # Dropout in the text tower and random augmentation: the RNG state must be restored too.
    cfg = load_config("tiny", overrides)
    train(cfg, tiny_data, tmp_path / "straight", progress=False)
    straight = [r["loss"] for r in read_metrics_log(tmp_path / "straight")]

    calls = {"n": 0}
    real = loop._to_device

    def crash_on_step_6(batch, device):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt("simulated preemption")
        return real(batch, device)

    monkeypatch.setattr(loop, "_to_device", crash_on_step_6)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tiny_data, tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed").exists(), "nothing published before the run finished"
    partial = tmp_path / "resumed.partial"
    assert (partial / "checkpoints").is_dir()
    monkeypatch.setattr(loop, "_to_device", real)
    with caplog.at_level("WARNING", logger="vsearch.training.loop"):
        summary = train(cfg, tiny_data, tmp_path / "resumed", progress=False)
    # The user is told the run resumed, from where, and how to start over instead.
    assert any(re.fullmatch(r"resuming .*resumed\.partial from its step-3 checkpoint \(5 of 8 steps left; --restart discards it\)",
                            r.getMessage()) for r in caplog.records), [r.getMessage() for r in caplog.records]
    resumed = [r["loss"] for r in read_metrics_log(tmp_path / "resumed")]
    assert summary["steps"] == 8 and len(resumed) == 8
    np.testing.assert_allclose(resumed, straight, rtol=1e-5, atol=1e-6)
    assert not partial.exists()
    a, _ = load_model(tmp_path / "straight")
    b, _ = load_model(tmp_path / "resumed")
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)


def test_unfinished_run_of_another_config_is_not_silently_resumed(tiny_data, tmp_path):
    cfg = load_config("tiny", ["train.max_steps=4", "train.checkpoint_every=2"])
    train(cfg, tiny_data, tmp_path / "m", stop_after=2, progress=False)
    other = load_config("tiny", ["train.max_steps=4", "train.lr=0.1"])
    with pytest.raises(ConfigError, match="--restart"):
        train(other, tiny_data, tmp_path / "m", progress=False)
    summary = train(other, tiny_data, tmp_path / "m", restart=True, progress=False)
    assert summary["published"] and summary["steps"] == 4


def _true_vs_random_wins(model, data_dir):
    """Share of (query, random other product) pairs where the true product scores higher."""
    evalset = load_eval_set(data_dir, split="train")
    gallery = embed_images(model, str(data_dir), list(evalset.gallery["image_uri"]), schema.CATALOG_FILE, 64, "cpu")
    queries = embed_images(model, str(data_dir), list(evalset.queries["query_image_uri"]), schema.INTERACTIONS_FILE, 64, "cpu")
    scores = queries @ gallery.T
    targets = evalset.queries["target"].to_numpy()
    rng = np.random.default_rng(0)
    wins = []
    for q, t in enumerate(targets):
        others = rng.choice(np.delete(np.arange(len(gallery)), t), size=5, replace=False)
        wins.extend(scores[q, t] > scores[q, others])
    return float(np.mean(wins))


def test_a_tiny_model_trained_a_few_steps_ranks_the_true_product_above_random_ones(tiny_data, tmp_path):
    cfg = load_config("tiny", ["train.max_steps=60", "train.lr=5e-3"])
    torch.manual_seed(cfg.train.seed)
    untrained = _true_vs_random_wins(build_model(cfg.model, _tok(tiny_data)).eval(), tiny_data)
    train(cfg, tiny_data, tmp_path / "m", progress=False)
    trained = _true_vs_random_wins(load_model(tmp_path / "m")[0].eval(), tiny_data)
    print(f"true-vs-random wins: untrained {untrained:.2f}, trained {trained:.2f}")
    assert trained > 0.8, (untrained, trained)
    assert trained > untrained + 0.15, (untrained, trained)


def _tok(data_dir):
    from vsearch.models.tokenizer import train_title_tokenizer
    import pandas as pd

    return train_title_tokenizer(pd.read_parquet(data_dir / schema.CATALOG_FILE)["title"], 300, 24)


def test_sampler_gives_the_same_number_of_unique_product_batches_every_epoch():
    from vsearch.data.dataset import UniqueProductBatchSampler

    rng = np.random.default_rng(0)
    products = rng.integers(0, 40, size=300)  # many repeats: greedy filling varies per epoch
    groups = products % 5
    for kwargs in ({}, {"groups": groups, "groups_per_batch": 2}):
        sampler = UniqueProductBatchSampler(products, 16, seed=1, **kwargs)
        for epoch in range(6):
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler) > 0
            assert all(len(b) == 16 and len(set(products[b])) == 16 for b in batches)
        sampler.set_epoch(2, start_batch=3)
        assert len(list(sampler)) == len(sampler) - 3
    # Two ranks take disjoint halves of the same global batches.
    r0 = list(UniqueProductBatchSampler(products, 16, seed=1, rank=0, world_size=2))
    r1 = list(UniqueProductBatchSampler(products, 16, seed=1, rank=1, world_size=2))
    whole = list(UniqueProductBatchSampler(products, 16, seed=1))
    assert [a + b for a, b in zip(r0, r1)] == whole


def test_augmentation_changes_training_images_but_not_their_shape_or_range():
    from vsearch.data.transforms import build_augment

    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32)
    for level in ("light", "strong"):
        out = build_augment(level, 32)(images)
        assert out.shape == images.shape
        assert not torch.allclose(out, images)
    assert build_augment("none", 32) is None
    with pytest.raises(ValueError, match="unknown augmentation level"):
        build_augment("extreme", 32)


def test_hard_negative_batches_group_by_a_catalog_column(tiny_data, tmp_path):
    from vsearch.schema import DataError, read_dataset
    from vsearch.data.dataset import EngagementDataset

    catalog, interactions, _ = read_dataset(tiny_data)
    dataset = EngagementDataset(tiny_data, catalog, interactions, 32, cache=False)
    groups = dataset.groups("colour")
    colours = catalog.set_index("product_id").loc[interactions["product_id"], "colour"].to_numpy()
    # Same group id exactly when the clicked products share the colour.
    assert ((groups[:, None] == groups[None, :]) == (colours[:, None] == colours[None, :])).all()
    with pytest.raises(DataError, match="grouping column 'material' is not in the catalog"):
        dataset.groups("material")
    summary = train(load_config("tiny", ["train.max_steps=3", "data.group_by=pattern", "data.groups_per_batch=2"]),
                    tiny_data, tmp_path / "m", progress=False)
    assert summary["steps"] == 3
