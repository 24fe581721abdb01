"""Shared fixtures: a tiny generated dataset and tiny trained models, built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """The `tiny` street-to-shop preset (seed 0): read-only for tests; copy before mutating."""
    from vsearch.data.synth import generate

    out = tmp_path_factory.mktemp("tiny") / "data"
    generate(out, "tiny", seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tiny_data):
    """Tiny image-only, 3-tower and 4-tower (from 3-tower) models trained a few steps."""
    from vsearch.config import load_config
    from vsearch.training.loop import train

    root = tmp_path_factory.mktemp("models")
    dirs = {}
    for name, preset, init in (
        ("image_only", "tiny_image_only", None),
        ("three_tower", "tiny", None),
        ("four_tower", "tiny_four_tower", "three_tower"),
    ):
        dirs[name] = root / name
        train(load_config(preset), tiny_data, dirs[name], init=dirs[init] if init else None, progress=False)
    return dirs
