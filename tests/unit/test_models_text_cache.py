"""The frozen text tower's output cache (issue 23): same features as uncached, dropped with the weights."""

import pytest
import torch

from vsearch.config import load_config
from vsearch.data.dataset import Collator
from vsearch.models import build_model
from vsearch.models.towers import Encoder
from vsearch.models.tokenizer import train_title_tokenizer

TITLES = ["Acme red striped mug", "Nordia blue dotted bag", "premium green zebra shoe", "classic yellow checker hat"]


@pytest.fixture()
def frozen_model():
    tokenizer = train_title_tokenizer(TITLES * 5, vocab_size=300, max_length=24)
    cfg = load_config("tiny", ["model.text.freeze=true"])
    model = build_model(cfg.model, tokenizer)
    model.train()  # the loop's mode: a frozen backbone stays in eval mode (no dropout)
    return model, Collator([], tokenizer, 24)


def _uncached(model, tokens):
    Encoder.cache_frozen = False
    try:
        return model.encode_text(**tokens)
    finally:
        Encoder.cache_frozen = True


def test_cached_features_equal_uncached_across_batches_and_padding(frozen_model):
    model, collator = frozen_model
    texts = [TITLES[0], TITLES[1], TITLES[0], "red"]
    first = model.encode_text(**collator.tokenize(texts))
    assert len(model.text_encoder._cache) == 3  # distinct texts only
    # Other batch: other padding length, repeated and new texts; gradients still reach the projection.
    tokens = collator.tokenize(["red", TITLES[2], TITLES[1]])
    cached = model.encode_text(**tokens)
    torch.testing.assert_close(cached, _uncached(model, tokens), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first[0], first[2])
    cached.sum().backward()
    assert model.text_encoder.proj.weight.grad is not None


def test_cache_is_dropped_when_the_weights_change(frozen_model):
    model, collator = frozen_model
    tokens = collator.tokenize(TITLES)
    before = model.encode_text(**tokens)
    state = {k: v + 0.1 for k, v in model.text_encoder.backbone.state_dict().items() if v.is_floating_point()}
    model.text_encoder.backbone.load_state_dict(state, strict=False)
    after = model.encode_text(**tokens)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, _uncached(model, tokens), rtol=1e-5, atol=1e-6)


def test_trainable_or_training_backbone_is_never_cached(frozen_model):
    model, collator = frozen_model
    model.text_encoder.backbone.requires_grad_(True)
    model.encode_text(**collator.tokenize(TITLES))
    assert model.text_encoder._cache == {}
