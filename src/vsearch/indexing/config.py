"""Index settings: dataclasses loaded from the ``index`` preset (or a YAML path) + overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from vsearch.config import ConfigError, load_typed

INDEX_TYPES = ("HNSW", "IVF_FLAT", "IVF_SQ8", "FLAT", "AUTOINDEX")
BACKFILL_METHODS = ("insert", "bulk_import")


@dataclass
class MilvusSettings:
    token_env: str = "VSEARCH_MILVUS_TOKEN"
    collection_prefix: str = "vsearch"
    registry_collection: str = "vsearch_registry"
    timeout_s: float = 600.0


@dataclass
class IndexParams:
    type: str = "HNSW"
    fallback: list[str] = field(default_factory=lambda: ["IVF_FLAT", "FLAT"])
    metric: str = "IP"
    hnsw: dict = field(default_factory=lambda: {"M": 16, "efConstruction": 200})
    ivf: dict = field(default_factory=lambda: {"nlist": 128})


@dataclass
class SearchParams:
    ef: int = 64
    nprobe: int = 16


@dataclass
class VerifyParams:
    sample_size: int = 200
    k: int = 10
    min_recall: float = 0.95
    seed: int = 0


@dataclass
class BackfillParams:
    batch_size: int = 64
    num_workers: int = 2
    queue_size: int = 8
    device: str = "cpu"
    # Sharded backfill write step: "insert" (upsert through the proxy, idempotent, any Milvus)
    # or "bulk_import" (Milvus server only: Parquet files into import_dir, one import task per shard).
    method: str = "insert"
    import_dir: str = ""  # a folder / s3:// prefix Milvus's own storage reads (bulk_import only)
    import_poll_s: float = 1.0


@dataclass
class IndexConfig:
    milvus: MilvusSettings = field(default_factory=MilvusSettings)
    index: IndexParams = field(default_factory=IndexParams)
    search: SearchParams = field(default_factory=SearchParams)
    verify: VerifyParams = field(default_factory=VerifyParams)
    backfill: BackfillParams = field(default_factory=BackfillParams)


def load_index_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> IndexConfig:
    """The packaged ``index`` preset (or the YAML at ``path``) with ``section.key=value``
    overrides (`vsearch.config.load_typed`), range-checked.

    Raises:
        ConfigError: missing file, unknown section or key, or an out-of-range value.
    """
    name = path if path is not None else "index"
    cfg = load_typed(IndexConfig, name, overrides)
    _validate(cfg, str(name))
    return cfg


def _validate(cfg: IndexConfig, where: str) -> None:
    for t in [cfg.index.type, *cfg.index.fallback]:
        if t not in INDEX_TYPES:
            raise ConfigError(f"{where}.index: unknown index type '{t}' (known: {list(INDEX_TYPES)})")
    if cfg.index.metric not in ("IP", "COSINE", "L2"):
        raise ConfigError(f"{where}.index.metric must be IP, COSINE or L2")
    if not 0.0 <= cfg.verify.min_recall:
        raise ConfigError(f"{where}.verify.min_recall must be >= 0")
    if cfg.verify.k < 1 or cfg.verify.sample_size < 1:
        raise ConfigError(f"{where}.verify: k and sample_size must be >= 1")
    if cfg.backfill.batch_size < 1 or cfg.backfill.queue_size < 1 or cfg.backfill.num_workers < 0:
        raise ConfigError(f"{where}.backfill: batch_size and queue_size must be >= 1, num_workers >= 0")
    if cfg.backfill.method not in BACKFILL_METHODS:
        raise ConfigError(f"{where}.backfill.method must be one of {list(BACKFILL_METHODS)}, not '{cfg.backfill.method}'")
    if cfg.backfill.method == "bulk_import" and not cfg.backfill.import_dir:
        raise ConfigError(f"{where}.backfill.import_dir must name a folder or s3:// prefix Milvus's storage reads (backfill.method=bulk_import)")
    if cfg.backfill.import_poll_s <= 0:
        raise ConfigError(f"{where}.backfill.import_poll_s must be > 0")
    if cfg.search.ef < 1 or cfg.search.nprobe < 1:
        raise ConfigError(f"{where}.search: ef and nprobe must be >= 1")
