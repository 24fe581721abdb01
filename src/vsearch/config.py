"""Typed configuration: dataclasses loaded from named YAML presets plus dotted overrides.

A preset lives in ``vsearch/configs/<name>.yaml`` (or any YAML file: an existing file is read
as a file whatever its name). A preset may name a ``base:`` preset it extends (`deep_merge`).
Overrides are ``section.key=value`` strings parsed as YAML scalars (``train.lr=3e-4``,
``loss.pairs=[...]``). A null value (``key:`` with nothing after it) is the field's default
(`build_typed`). Each stage receives only the sub-config it needs (``ModelConfig``,
``LossConfig`` ...), never the whole tree.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vsearch import schema

T = TypeVar("T")


@dataclass
class BackboneConfig:
    """One encoder backbone.

    Either ``pretrained`` (a local folder or hub id for ``AutoModel.from_pretrained``) or
    ``type`` plus ``kwargs`` for a config built from code (tiny models for tests and CPU).
    ``type`` is a transformers model type: "vit", "resnet", "convnext", "clip_vision_model",
    "bert", "clip_text_model" ...
    """

    type: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    pooling: str = "auto"  # auto | cls | mean | pooler
    freeze: bool = False  # weights not trained; the backbone runs in eval mode
    eval_mode: bool = False  # trained, but in eval mode (no dropout, fixed batch-norm statistics)
    projection: str = ""  # "" = the model's `projection`; or linear | mlp | none (identity)


@dataclass
class ModelConfig:
    """The multi-tower model: shared image encoder, shared text encoder, projections.

    ``towers`` lists the towers trained; query_image and product_image share the image
    encoder, product_text and query_text share the text encoder (the paper's weight sharing).
    """

    towers: list[str] = field(default_factory=lambda: [schema.QUERY_IMAGE, schema.PRODUCT_IMAGE])
    image: BackboneConfig = field(default_factory=BackboneConfig)
    text: BackboneConfig = field(default_factory=BackboneConfig)
    embed_dim: int = 128
    projection: str = "linear"  # linear | mlp
    init_logit_scale: float = 2.6593  # log(1/0.07), as CLIP
    max_logit_scale: float = 100.0
    fusion_text_weight: float = 0.3  # fused query = normalise((1-w) * image + w * text)
    image_size: int = 64
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    max_text_length: int = 32
    tokenizer_vocab_size: int = 512  # for the tokenizer trained on catalog titles


@dataclass
class LossPair:
    """One InfoNCE term between two feature keys (towers or ``fused_query``)."""

    a: str
    b: str
    weight: float = 1.0
    name: str = ""
    # Relational text constraint: targets = (1 - soft_mix) * one-hot + soft_mix * soft targets
    # from the in-batch similarity of another feature (e.g. product_text), so image-image
    # similarity follows the text's notion of which products are alike. 0 = plain InfoNCE.
    soft_targets: str = ""
    soft_mix: float = 0.0
    soft_temperature: float = 0.05

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"{self.a}_{self.b}"


@dataclass
class LossConfig:
    pairs: list[LossPair] = field(default_factory=lambda: [LossPair(schema.QUERY_IMAGE, schema.PRODUCT_IMAGE)])


@dataclass
class DataConfig:
    batch_size: int = 64  # global batch, independent of world size
    num_workers: int = 0
    cache_images: bool = True
    augment: str = "none"  # query images: none | light | strong (vsearch.data.transforms)
    augment_product: str = "none"  # product images, same levels
    group_by: str = ""  # catalog column for hard-negative batches ("" = random batches)
    groups_per_batch: int = 0
    # Reformulation-style rows mined from the training split (vsearch.data.reformulations):
    # per training click, this many (photo, "in <sibling's attribute>", sibling) rows; 0 = off.
    # Both columns are optional (schema.CONFIGURED_CATALOG_COLUMNS): name your catalog's own;
    # a catalog without them trains without mined rows (docs/data.md says what that costs).
    mine_reformulations: int = 0
    reformulation_group: str = "design_id"
    reformulation_attribute: str = "colour"


@dataclass
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    epochs: float = 10.0
    max_steps: int = 0  # if > 0, overrides epochs
    grad_clip: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0
    image_backbone_lr_scale: float = 1.0  # lr multiplier for the image backbone (pretrained: < 1)
    text_backbone_lr_scale: float = 1.0  # the same for the text backbone (when it is not frozen)
    precision: str = "auto"  # auto (bf16 on cuda, fp32 on cpu) | fp32 | bf16
    device: str = "auto"


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    fusion_text_weight: float | None = None  # None: the model's own
    n_boot: int = 1000
    seed: int = 0
    batch_size: int = 256
    n_examples: int = 12


@dataclass
class RunConfig:
    name: str = "image_only"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


class ConfigError(ValueError):
    """A preset or override that does not fit the config schema."""


def load_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` whose every failure (broken YAML, a ``!!python/object`` tag ...)
    is a one-line ConfigError naming ``where``; every config loader reads YAML through it."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        first = " ".join(str(err).split())
        raise ConfigError(f"{where}: not valid YAML ({clip(first, 160)})") from err


def clip(value: Any, limit: int = 60) -> str:
    """``repr``-like text of ``value`` cut to ``limit`` characters, for one-line errors."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 12]}...({len(text)} chars)"


def build_typed(cls: type[T], raw: Any, where: str) -> T:
    """Dataclass ``cls`` from plain data (YAML, a JSON record), as `load_typed` builds it:
    unknown keys and values of the wrong type are refused with one line naming ``where`` and
    the key; nested dataclass fields (and lists of them) are built from their type hints.

    A null value (``key:`` with nothing after it, ``key=null``) means "not set": an Optional
    field takes None, any other field its default, and a field without one is a ConfigError.
    """
    if not dataclasses.is_dataclass(cls):
        return raw
    if isinstance(raw, cls):
        return raw
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {key: _coerce(value, hints[key], f"{where}.{key}") for key, value in raw.items()
              if not _null_means_default(cls, key, value, hints[key], where)}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from err


def _null_means_default(cls: type, key: str, value: Any, hint: Any, where: str) -> bool:
    """True when field ``key`` of ``cls`` is null and not Optional: it takes its default."""
    if value is not None or type(None) in typing.get_args(hint):
        return False
    spec = next(f for f in dataclasses.fields(cls) if f.name == key)
    if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
        raise ConfigError(f"{where}.{key}: a value is required, got null")
    return True


# int takes a float too: a RunConfig range check (`_check_ranges`) names a fractional one itself.
_SCALARS: dict[type, tuple[type, ...]] = {int: (int, float), float: (int, float), str: (str,), bool: (bool,), list: (list,), dict: (dict,)}


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the field's type ``hint``: nested dataclasses built, YAML scalars coerced
    (PyYAML reads ``5e-3`` as a string), a value of another type refused (ConfigError)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _coerce(value, options[0], where) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint):
        return build_typed(hint, value, where)
    base = origin or hint
    if base in (list, tuple) and args and dataclasses.is_dataclass(args[0]) and isinstance(value, list):
        return base(build_typed(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    try:
        if base is float and isinstance(value, (str, int)) and not isinstance(value, bool):
            return float(value)
        if base is int and isinstance(value, str):
            return int(value)
    except ValueError as err:
        raise ConfigError(f"{where}: expected {base.__name__}, got {clip(value)}") from err
    allowed = _SCALARS.get(base)
    if allowed and (not isinstance(value, allowed) or (base in (int, float) and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {base.__name__}, got {clip(value)}")
    return value


def deep_merge(base: dict, over: dict, cls: type | None = None) -> dict:
    """``over`` laid on ``base``, the one merge rule of ``base:`` presets and config files:
    mappings merge key by key at every depth, anything else (lists, scalars, null) replaces.

    Given the dataclass ``cls`` the mappings describe, only its sections (dataclass fields)
    merge; a field typed as a plain dict (a node selector, backbone kwargs) is one value that
    ``over`` replaces whole, so a file can drop a default key rather than only add to it.
    """
    hints = typing.get_type_hints(cls) if cls is not None and dataclasses.is_dataclass(cls) else {}
    out = dict(base)
    for key, value in over.items():
        section = hints.get(key) if hints else None
        if isinstance(value, dict) and isinstance(out.get(key), dict) and (not hints or dataclasses.is_dataclass(section)):
            out[key] = deep_merge(out[key], value, section)
        else:
            out[key] = value
    return out


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("vsearch.configs").iterdir() if p.name.endswith(".yaml"))


def read_config(name_or_path: str | os.PathLike, cls: type | None = None, seen: tuple[str, ...] = ()) -> dict:
    """The mapping of a preset name or YAML path as `load_typed` reads it (``base:`` resolved
    by `deep_merge`, for dataclass ``cls`` when given), before overrides and types. An existing file is read as a file whatever its name;
    otherwise a name with a ``.yaml``/``.yml`` suffix or a path separator is a missing file,
    and a bare name is a preset of ``vsearch/configs``."""
    text_path = str(name_or_path)
    if text_path.endswith((".yaml", ".yml")) or os.sep in text_path or Path(text_path).is_file():
        path = Path(text_path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        text = path.read_text()
    else:
        res = resources.files("vsearch.configs") / f"{text_path}.yaml"
        if not res.is_file():
            raise ConfigError(f"unknown config preset '{text_path}' (known: {', '.join(preset_names())})")
        text = res.read_text()
    if text_path in seen:
        raise ConfigError(f"config preset cycle: {' -> '.join(seen + (text_path,))}")
    raw = load_yaml(text, text_path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{text_path}: top level must be a mapping")
    base = raw.pop("base", None)
    if base:
        raw = deep_merge(read_config(base, cls, seen + (text_path,)), raw, cls)
    return raw


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a raw config mapping."""
    raw = dict(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        dotted, value_text = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = raw
        for key in keys[:-1]:
            child = node.get(key)
            child = dict(child) if isinstance(child, dict) else {}
            node[key] = child
            node = child
        node[keys[-1]] = load_yaml(value_text, f"override {clip(dotted, 60)}")
    return raw


def load_typed(cls: type[T], name_or_path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """The one config loader: a preset name of ``vsearch/configs`` or a YAML path (``base:``
    extends another preset), then dotted ``key=value`` overrides, into dataclass ``cls``.
    Every failure is a one-line ConfigError naming the file and the key."""
    return build_typed(cls, apply_overrides(read_config(name_or_path, cls), overrides), str(name_or_path))


def load_config(name_or_path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a named preset (``tiny``, ``three_tower`` ...) or YAML file, then overrides."""
    cfg = load_typed(RunConfig, name_or_path, overrides)
    validate(cfg)
    return cfg


def config_from_dict(raw: dict) -> RunConfig:
    cfg = build_typed(RunConfig, raw, "config")
    validate(cfg)
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def validate(cfg: RunConfig) -> None:
    towers = cfg.model.towers
    for tower in towers:
        if tower not in schema.TOWERS:
            raise ConfigError(f"model.towers: unknown tower '{tower}' (known: {list(schema.TOWERS)})")
    if schema.QUERY_IMAGE not in towers or schema.PRODUCT_IMAGE not in towers:
        raise ConfigError("model.towers: query_image and product_image are required (the main loss)")
    keys = set(towers)
    if schema.QUERY_IMAGE in keys and schema.QUERY_TEXT in keys:
        keys.add(schema.FUSED_QUERY)
    names = set()
    for pair in cfg.loss.pairs:
        for end in (pair.a, pair.b):
            if end not in keys:
                raise ConfigError(f"loss pair '{pair.name}': '{end}' is not produced by towers {towers}")
        if pair.name in names:
            raise ConfigError(f"loss pair name '{pair.name}' used twice")
        if pair.soft_targets and pair.soft_targets not in keys:
            raise ConfigError(f"loss pair '{pair.name}': soft_targets '{pair.soft_targets}' is not produced by towers {towers}")
        if not 0.0 <= pair.soft_mix <= 1.0:
            raise ConfigError(f"loss pair '{pair.name}': soft_mix must be in [0, 1]")
        if pair.weight < 0:
            raise ConfigError(f"loss pair '{pair.name}': weight must be >= 0")
        names.add(pair.name)
    if not cfg.loss.pairs:
        raise ConfigError("loss.pairs: at least one pair is required")
    if any(t in towers for t in schema.TEXT_TOWERS) and not (cfg.model.text.type or cfg.model.text.pretrained):
        raise ConfigError("model.text: text towers need a backbone (type or pretrained)")
    if not (cfg.model.image.type or cfg.model.image.pretrained):
        raise ConfigError("model.image: a backbone is required (type or pretrained)")
    if not 0.0 <= cfg.model.fusion_text_weight <= 1.0:
        raise ConfigError("model.fusion_text_weight must be in [0, 1]")
    if cfg.data.batch_size < 2:
        raise ConfigError("data.batch_size must be >= 2 (in-batch negatives)")
    _check_ranges(cfg)


# (section, key) -> (lowest, highest, lowest allowed itself?): numbers outside are refused at
# load, before any folder is written. None = unbounded on that side.
_RANGES: dict[tuple[str, str], tuple[float | None, float | None, bool]] = {
    ("model", "embed_dim"): (1, None, True),
    ("model", "image_size"): (8, None, True),
    ("model", "max_text_length"): (2, None, True),
    ("model", "tokenizer_vocab_size"): (32, None, True),
    ("model", "max_logit_scale"): (0, None, False),
    ("data", "batch_size"): (2, None, True),
    ("data", "num_workers"): (0, None, True),
    ("data", "groups_per_batch"): (0, None, True),
    ("data", "mine_reformulations"): (0, None, True),
    ("train", "lr"): (0, None, False),
    ("train", "weight_decay"): (0, None, True),
    ("train", "warmup_steps"): (0, None, True),
    ("train", "epochs"): (0, None, False),
    ("train", "max_steps"): (0, None, True),
    ("train", "grad_clip"): (0, None, True),
    ("train", "checkpoint_every"): (0, None, True),
    ("train", "log_every"): (1, None, True),
    ("train", "image_backbone_lr_scale"): (0, None, True),
    ("train", "text_backbone_lr_scale"): (0, None, True),
    ("eval", "n_boot"): (0, None, True),
    ("eval", "batch_size"): (1, None, True),
    ("eval", "n_examples"): (0, None, True),
}
PRECISIONS = ("auto", "fp32", "bf16")
_DEVICE = r"auto|cpu|mps|cuda(:\d+)?"


def _range_text(low: float | None, high: float | None, closed: bool) -> str:
    parts = [f"{'>=' if closed else '>'} {low}" if low is not None else "", f"<= {high}" if high is not None else ""]
    return " and ".join(p for p in parts if p)


def _check_ranges(cfg: RunConfig) -> None:
    """Every number within its range (finite, the right type), every choice known."""
    import math
    import re

    for (section, key), (low, high, closed) in _RANGES.items():
        value = getattr(getattr(cfg, section), key)
        allowed = _range_text(low, high, closed)
        kind = next(f.type for f in dataclasses.fields(type(getattr(cfg, section))) if f.name == key)
        wants_int = str(kind) == "int"
        ok_type = isinstance(value, int) if wants_int else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or not math.isfinite(value):
            raise ConfigError(f"{section}.{key}={clip(value)}: must be a finite {'integer' if wants_int else 'number'} {allowed}")
        if (low is not None and (value < low or (value == low and not closed))) or (high is not None and value > high):
            raise ConfigError(f"{section}.{key}={clip(value)}: must be {allowed}")
    for name, value in (("model.init_logit_scale", cfg.model.init_logit_scale),):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name}={clip(value)}: must be a finite number")
    if cfg.train.precision not in PRECISIONS:
        raise ConfigError(f"train.precision={clip(cfg.train.precision)}: must be one of {list(PRECISIONS)}")
    if not isinstance(cfg.train.device, str) or not re.fullmatch(_DEVICE, cfg.train.device):
        raise ConfigError(f"train.device={clip(cfg.train.device)}: must be auto, cpu, mps, cuda or cuda:N")
    for pair in cfg.loss.pairs:
        for key, value in (("weight", pair.weight), ("soft_mix", pair.soft_mix), ("soft_temperature", pair.soft_temperature)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"loss pair '{clip(pair.name)}': {key}={clip(value)}: must be a finite number")
        if pair.soft_temperature <= 0:
            raise ConfigError(f"loss pair '{clip(pair.name)}': soft_temperature={clip(pair.soft_temperature)}: must be > 0")
    if any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in cfg.eval.ks):
        raise ConfigError(f"eval.ks={clip(cfg.eval.ks)}: every k must be an integer >= 1")


def save_config(cfg: RunConfig, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
