"""The multi-tower model of Multimodal Image Matching (Zhu et al., KDD 2024).

3-tower: query image and product image share the image encoder; the product title has the
text encoder. 4-tower: the short query text shares the text encoder with the title. Which
towers run is configuration, not a subclass. The model returns features, never a loss.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vsearch import schema
from vsearch.config import BackboneConfig, ModelConfig
from vsearch.model_folder import CONFIG_FILE, IMAGE_BACKBONE_DIR, TEXT_BACKBONE_DIR, TOKENIZER_DIR, WEIGHTS_FILE
from vsearch.models.towers import Encoder, build_backbone, register_backbones

FORMAT_VERSION = 1


def fuse(image_features: torch.Tensor, text_features: torch.Tensor, text_weight: float) -> torch.Tensor:
    """Multimodal query: normalise((1 - w) * image + w * text); inputs and output (B, D)."""
    return F.normalize((1.0 - text_weight) * image_features + text_weight * text_features, dim=-1)


def _pad_cat(parts: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Concatenate tokenized batches of different lengths along the batch axis."""
    length = max(p["input_ids"].shape[1] for p in parts)
    ids, masks = [], []
    for p in parts:
        extra = length - p["input_ids"].shape[1]
        ids.append(F.pad(p["input_ids"], (0, extra), value=pad_id))
        masks.append(F.pad(p["attention_mask"], (0, extra), value=0))
    return {"input_ids": torch.cat(ids), "attention_mask": torch.cat(masks)}


class MultiTowerModel(nn.Module):
    """Shared image encoder + (optional) shared text encoder + learnable temperature.

    ``forward(batch)`` takes a dict keyed by tower name: image towers hold ``pixel_values``
    (B, 3, H, W); text towers hold a dict with ``input_ids`` and ``attention_mask`` (B, T).
    An optional ``"<tower>_valid"`` (B,) bool marks rows that have that input (empty query
    texts). It returns ``"<tower>_features"`` (B, D) L2-normalised for every configured
    tower in the batch, ``"fused_query_features"`` when both query towers ran, the
    ``"<tower>_valid"`` masks, and ``"logit_scale"`` (scalar, exp of the learnt log-scale).
    """

    def __init__(self, cfg: ModelConfig, image_backbone: nn.Module, text_backbone: nn.Module | None, pad_token_id: int = 0):
        super().__init__()
        self.cfg = cfg
        self.image_encoder = Encoder(image_backbone, cfg.embed_dim, cfg.image.pooling, cfg.image.projection or cfg.projection)
        self.text_encoder = (
            Encoder(text_backbone, cfg.embed_dim, cfg.text.pooling, cfg.text.projection or cfg.projection)
            if text_backbone is not None
            else None
        )
        self.set_backbone_training(cfg.image, cfg.text)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.pad_token_id = pad_token_id
        self.towers = list(cfg.towers)

    @property
    def has_text(self) -> bool:
        return self.text_encoder is not None

    def set_towers(self, towers: list[str]) -> None:
        """Switch the towers that run (3-tower -> 4-tower adds query_text; no new weights)."""
        if any(t in schema.TEXT_TOWERS for t in towers) and not self.has_text:
            raise ValueError("this model has no text encoder")
        self.towers = list(towers)
        self.cfg = dataclasses.replace(self.cfg, towers=list(towers))

    def set_backbone_training(self, image: BackboneConfig, text: BackboneConfig) -> None:
        """Take ``freeze`` and ``eval_mode`` of each backbone from these configs (a training
        choice, not architecture: a run started from a saved model decides them itself). A frozen
        backbone gets no gradient however the model was made, built or loaded."""
        self.cfg = dataclasses.replace(
            self.cfg,
            image=dataclasses.replace(self.cfg.image, freeze=image.freeze, eval_mode=image.eval_mode),
            text=dataclasses.replace(self.cfg.text, freeze=text.freeze, eval_mode=text.eval_mode),
        )
        for encoder, backbone_cfg in ((self.image_encoder, image), (self.text_encoder, text)):
            if encoder is not None:
                encoder.backbone.requires_grad_(not backbone_cfg.freeze)

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen and eval-mode backbones stay in eval mode (no dropout / batch-norm updates).
        if self.cfg.image.freeze or self.cfg.image.eval_mode:
            self.image_encoder.backbone.eval()
        if self.text_encoder is not None and (self.cfg.text.freeze or self.cfg.text.eval_mode):
            self.text_encoder.backbone.eval()
        return self

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> (B, D) unit features."""
        return self.image_encoder(pixel_values=pixel_values)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids and mask -> (B, D) unit features."""
        if self.text_encoder is None:
            raise ValueError("this model has no text encoder")
        return self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        image_towers = [t for t in schema.IMAGE_TOWERS if t in self.towers and t in batch]
        if image_towers:
            sizes = [batch[t].shape[0] for t in image_towers]
            # One pass through the shared encoder for all image towers.
            features = self.encode_image(torch.cat([batch[t] for t in image_towers])).split(sizes)
            out.update({f"{t}_features": f for t, f in zip(image_towers, features)})
        text_towers = [t for t in schema.TEXT_TOWERS if t in self.towers and t in batch]
        if text_towers:
            sizes = [batch[t]["input_ids"].shape[0] for t in text_towers]
            tokens = _pad_cat([batch[t] for t in text_towers], self.pad_token_id)
            features = self.encode_text(**tokens).split(sizes)
            out.update({f"{t}_features": f for t, f in zip(text_towers, features)})
        for t in image_towers + text_towers:
            if f"{t}_valid" in batch:
                out[f"{t}_valid"] = batch[f"{t}_valid"]
        if f"{schema.QUERY_IMAGE}_features" in out and f"{schema.QUERY_TEXT}_features" in out:
            out[f"{schema.FUSED_QUERY}_features"] = fuse(
                out[f"{schema.QUERY_IMAGE}_features"], out[f"{schema.QUERY_TEXT}_features"], self.cfg.fusion_text_weight
            )
            if f"{schema.QUERY_TEXT}_valid" in out:
                out[f"{schema.FUSED_QUERY}_valid"] = out[f"{schema.QUERY_TEXT}_valid"]
        out["logit_scale"] = self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale)
        return out

    # ---------------------------------------------------------------- persistence
    def save_pretrained(self, path: str | os.PathLike, tokenizer=None) -> None:
        """Write safetensors weights, the model config, backbone configs and the tokenizer."""
        from safetensors.torch import save_model

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_model(self, str(path / WEIGHTS_FILE))
        self.image_encoder.backbone.config.save_pretrained(path / IMAGE_BACKBONE_DIR)
        if self.text_encoder is not None:
            self.text_encoder.backbone.config.save_pretrained(path / TEXT_BACKBONE_DIR)
        if tokenizer is not None:
            tokenizer.save_pretrained(path / TOKENIZER_DIR)
        meta = {"format_version": FORMAT_VERSION, "model": dataclasses.asdict(self.cfg), "pad_token_id": self.pad_token_id}
        (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> MultiTowerModel:
        """Load a model saved by ``save_pretrained``; reads only fixed names inside ``path``."""
        from safetensors.torch import load_model
        from transformers import AutoConfig, AutoModel

        path = Path(path)
        meta_path = path / CONFIG_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: not a vsearch model folder (missing {CONFIG_FILE})")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: unsupported format_version {meta.get('format_version')}")
        raw = dict(meta["model"])
        raw["image"] = BackboneConfig(**raw["image"])
        raw["text"] = BackboneConfig(**raw["text"])
        cfg = ModelConfig(**raw)
        register_backbones()  # this package's own backbone types (vsearch_mobilenet_v2)
        image_backbone = AutoModel.from_config(AutoConfig.from_pretrained(path / IMAGE_BACKBONE_DIR))
        text_backbone = None
        if (path / TEXT_BACKBONE_DIR).is_dir():
            text_backbone = AutoModel.from_config(AutoConfig.from_pretrained(path / TEXT_BACKBONE_DIR))
        model = cls(cfg, image_backbone, text_backbone, pad_token_id=int(meta.get("pad_token_id", 0)))
        load_model(model, str(path / WEIGHTS_FILE), strict=True, device=str(device))
        return model.to(device)


def build_model(cfg: ModelConfig, tokenizer=None) -> MultiTowerModel:
    """Build a fresh model; text backbones built from code take vocab and ids from ``tokenizer``."""
    image_backbone = build_backbone(cfg.image, "image")
    text_backbone = None
    pad_id = 0
    if any(t in schema.TEXT_TOWERS for t in cfg.towers):
        text_cfg = cfg.text
        if not text_cfg.pretrained:
            if tokenizer is None:
                raise ValueError("a text backbone built from code needs the tokenizer (vocab size, pad id)")
            kwargs = dict(text_cfg.kwargs)
            kwargs.setdefault("vocab_size", len(tokenizer))
            kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
            kwargs.setdefault("max_position_embeddings", max(cfg.max_text_length, 16))
            if text_cfg.type == "clip_text_model":
                # CLIP pools on the eos token: it must be our tokenizer's end token.
                kwargs.setdefault("eos_token_id", tokenizer.sep_token_id)
                kwargs.setdefault("bos_token_id", tokenizer.cls_token_id)
            text_cfg = dataclasses.replace(text_cfg, kwargs=kwargs)
            cfg = dataclasses.replace(cfg, text=text_cfg)
        text_backbone = build_backbone(text_cfg, "text")
        if tokenizer is not None and tokenizer.pad_token_id is not None:
            pad_id = int(tokenizer.pad_token_id)
    return MultiTowerModel(cfg, image_backbone, text_backbone, pad_token_id=pad_id)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Load (model, tokenizer-or-None) from a model folder.

    Only safetensors weights and JSON are read (never pickle). Raises DataError, naming the
    folder, when it is not a loadable vsearch model (missing files, pickle or corrupt weights,
    weights that do not fit the recorded architecture).
    """
    from vsearch.models.tokenizer import load_tokenizer
    from vsearch.schema import DataError

    try:
        model = MultiTowerModel.from_pretrained(path, device=device)
        tok_dir = Path(path) / TOKENIZER_DIR
        tokenizer = load_tokenizer(str(tok_dir)) if tok_dir.is_dir() else None
    except DataError:
        raise
    except Exception as err:  # any way a hostile or broken folder fails: one DataError
        from vsearch.config import clip

        rule = "not a vsearch model folder that loads (safetensors weights + vsearch_model.json)"
        raise DataError(path, rule, detail=f"{type(err).__name__}: {clip(str(err), 120)}") from err
    return model, tokenizer
