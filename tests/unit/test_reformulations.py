"""Mined reformulation rows for the 4-tower model: right targets, training split only, masks."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from vsearch import schema
from vsearch.data.dataset import Collator, EngagementDataset
from vsearch.data.reformulations import mine_reformulations


def test_mined_rows_target_a_sibling_in_another_colour_named_in_the_text(tiny_data):
    catalog, interactions, _ = schema.read_dataset(tiny_data)
    train = interactions[interactions["split"] == "train"]
    mined = mine_reformulations(catalog, train, per_row=1, seed=0)
    products = catalog.set_index("product_id")
    source = train.set_index("query_id")
    assert len(mined) > 0 and not mined["engagement"].any()
    for r in mined.itertuples():
        original = source.loc[r.query_id.split("~")[0]]
        assert r.query_image_uri == original.query_image_uri
        assert r.product_id != original.product_id
        assert products.at[r.product_id, "design_id"] == products.at[original.product_id, "design_id"]
        assert products.at[r.product_id, "colour"] != products.at[original.product_id, "colour"]
        assert products.at[r.product_id, "colour"] in r.query_text
    # nothing outside the training split: every target is a training product
    assert set(mined["product_id"]) <= set(train["product_id"])
    assert mine_reformulations(catalog, train, per_row=1, seed=0).equals(mined)  # deterministic


@pytest.mark.parametrize("column, key", [("design_id", "data.reformulation_group"), ("colour", "data.reformulation_attribute")])
def test_without_the_optional_group_or_attribute_column_nothing_is_mined_and_the_reason_is_given(tiny_data, column, key):
    catalog, interactions, _ = schema.read_dataset(tiny_data)
    train = interactions[interactions["split"] == "train"]
    mined = mine_reformulations(catalog.drop(columns=[column]), train)
    normal = mine_reformulations(catalog, train)
    assert mined.empty and list(mined.columns) == list(normal.columns)
    assert column in mined.attrs["skipped"] and key in mined.attrs["skipped"]
    assert "skipped" not in normal.attrs


def test_mined_rows_are_masked_out_of_the_terms_that_use_the_photo_itself(tiny_data):
    from vsearch.models.tokenizer import train_title_tokenizer

    catalog, interactions, _ = schema.read_dataset(tiny_data)
    train = interactions[interactions["split"] == "train"]
    mined = mine_reformulations(catalog, train).head(3)
    mined.index = pd.RangeIndex(len(interactions), len(interactions) + len(mined))
    rows = pd.concat([train.head(3).assign(engagement=True), mined])
    ds = EngagementDataset(tiny_data, catalog, rows, 32)
    tok = train_title_tokenizer(list(catalog["title"]), 256, 16)
    towers = list(schema.TOWERS)
    batch = Collator(towers, tok, 16)([ds[i] for i in range(len(ds))])
    assert batch["query_image_valid"].tolist() == [True] * 3 + [False] * 3
    # engagement-only batches carry no mask: the loss is exactly the plain one
    assert "query_image_valid" not in Collator(towers, tok, 16)([ds[i] for i in range(3)])

    from vsearch.losses import MultiTowerLoss
    from vsearch.config import LossPair

    d = 8
    feats = {f"{t}_features": torch.nn.functional.normalize(torch.randn(6, d), dim=-1) for t in towers}
    loss = MultiTowerLoss([LossPair(name="ii", a="query_image", b="product_image")])
    masked = loss(torch.tensor(10.0), **feats, query_image_valid=batch["query_image_valid"])["ii_loss"]
    first3 = loss(torch.tensor(10.0), **{k: v[:3] for k, v in feats.items()})["ii_loss"]
    assert torch.allclose(masked, first3)


def test_the_report_notes_a_model_trained_without_mined_rows(tmp_path):
    from vsearch import model_folder
    from vsearch.evaluation.evaluate import training_notes

    reason = "no mined reformulation rows: catalog has no column 'design_id' (set data.reformulation_group ...)"
    # train() records {"rows", "skipped"} (vsearch.training.loop); a model that mined rows has no "skipped".
    summaries = {"four_tower": {"mined_reformulations": {"rows": 0, "skipped": reason}},
                 "three_tower": {"steps": 3, "mined_reformulations": {"rows": 0}},
                 "four_tower_mined": {"mined_reformulations": {"rows": 120}}}
    for name, summary in summaries.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / model_folder.SUMMARY_FILE).write_text(json.dumps(summary))
    assert training_notes({name: str(tmp_path / name) for name in summaries}) == [f"four_tower: {reason}"]
