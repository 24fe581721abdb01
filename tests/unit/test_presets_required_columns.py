"""Every shipped training preset trains on a dataset with only the contract's required columns.

The presets keep their towers, losses and options (mined reformulations included); only the
sizes shrink (a few steps, small images and batches) so that the test takes seconds. A preset
that needs a column outside the contract fails here, as `four_tower` did with `design_id`.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from vsearch import model_folder, schema
from vsearch.config import load_config, preset_names, read_config
from vsearch.training.loop import train

TRAINING_PRESETS = [n for n in preset_names() if "model" in read_config(n)]
# A 4-tower preset starts from its 3-tower checkpoint, as the demo and the pipeline do.
INIT = {"four_tower": "three_tower", "tiny_four_tower": "tiny"}
FAST = ["train.max_steps=2", "train.warmup_steps=1", "train.checkpoint_every=0", "data.batch_size=8", "model.image_size=32"]


@pytest.fixture(scope="module")
def required_only(tmp_path_factory, tiny_data):
    """The tiny benchmark with every column outside the contract's required ones dropped."""
    out = tmp_path_factory.mktemp("required-only") / "data"
    shutil.copytree(tiny_data, out)
    for name, columns in schema.MANIFESTS.items():
        path = out / name
        if path.is_file():
            df = pd.read_parquet(path)
            df[[c.name for c in columns]].to_parquet(path, index=False)
    (out / schema.PRODUCT_HISTORY_FILE).unlink(missing_ok=True)
    return out


def test_the_training_presets_are_the_shipped_ones():
    assert {"image_only", "three_tower", "four_tower", "tiny", "tiny_four_tower", "tiny_image_only"} <= set(TRAINING_PRESETS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, required_only):
    root = tmp_path_factory.mktemp("presets")
    summaries = {}
    for name in sorted(TRAINING_PRESETS, key=lambda n: n in INIT):  # inits first
        init = root / INIT[name] if name in INIT else None
        summaries[name] = train(load_config(name, FAST), required_only, root / name, init=init, progress=False)
    return root, summaries


@pytest.mark.parametrize("name", TRAINING_PRESETS)
def test_every_training_preset_trains_on_the_required_columns_only(trained, name):
    root, summaries = trained
    assert summaries[name]["steps"] == 2 and summaries[name]["published"]
    assert (root / name / model_folder.SUMMARY_FILE).is_file()
    assert summaries[name]["towers"] == list(load_config(name).model.towers)


def test_the_four_tower_summary_says_why_no_rows_were_mined(trained):
    root, _ = trained
    summary = json.loads((root / "four_tower" / model_folder.SUMMARY_FILE).read_text())
    mined = summary["mined_reformulations"]
    assert mined["rows"] == 0 and "data.reformulation_group" in mined["skipped"]
