"""Sharded backfill: embed catalog shards in parallel, then index, verify and swap once.

The KFP backfill pipeline fans out one ``embed_shard`` per shard (``dsl.ParallelFor``, each
on its own node / GPU) and collects the shard files into one ``index_shards`` step that
writes the versioned collection, flushes, indexes, verifies it at Strong consistency and
only then moves the serving alias, exactly as :func:`vsearch.indexing.backfill.backfill`
does in one process. A shard file is a parquet table: ``product_id``, ``category``,
``embedding`` (list of float32, L2-normalised, the model's ``embed_dim``).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np

from vsearch import artifacts, schema
from vsearch.indexing.backfill import (
    BackfillReport,
    check_collection_dim,
    check_finite,
    finalize_and_swap,
    iter_image_batches,
    mark_writing,
    open_collection,
)
from vsearch.indexing.config import IndexConfig
from vsearch.indexing.store import CATEGORY, PRIMARY, VECTOR, Store
from vsearch.memory import keep_freed_memory
from vsearch.schema import DataError

SHARD_COLUMNS = ("product_id", "category", "embedding")


def shard_rows(n_rows: int, shard: int, num_shards: int) -> range:
    """Contiguous catalog rows of ``shard`` (0-based) out of ``num_shards``; together they cover 0..n-1 once."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} of {num_shards}: need 0 <= shard < num_shards and num_shards >= 1")
    return range(shard * n_rows // num_shards, (shard + 1) * n_rows // num_shards)


def embed_shard(model_dir: str | os.PathLike, data_dir: str | os.PathLike, shard: int, num_shards: int,
                out_file: str | os.PathLike, cfg: IndexConfig, device: str | None = None) -> dict:
    """Embed the catalog rows of one shard with the model's product-image tower into ``out_file``.

    Returns:
        {"shard", "num_shards", "rows", "first_row", "seconds", "model_version", "dim"}.

    Raises:
        DataError: a bad image or a NaN/inf embedding (catalog file and row named).
    """
    import pandas as pd
    import torch

    from vsearch.artifacts import model_version
    from vsearch.data.dataset import Collator
    from vsearch.models.multitower import load_model

    t0 = time.perf_counter()
    data_dir = str(data_dir)
    catalog = schema.read_manifest(data_dir, schema.CATALOG_FILE)
    rows = list(shard_rows(len(catalog), shard, num_shards))
    device = device or cfg.backfill.device
    keep_freed_memory(device)  # a batch step: 7.4 s -> 4.9 s for the demo's catalog (vsearch.memory)
    model, _ = load_model(model_dir, device=device)
    model.eval()
    collator = Collator([], mean=model.cfg.image_mean, std=model.cfg.image_std)
    ids, uris, categories = catalog["product_id"].tolist(), catalog["image_uri"].tolist(), catalog["category"].tolist()
    parts: list[np.ndarray] = []
    with torch.inference_mode(), contextlib.closing(iter_image_batches(
            data_dir, [uris[r] for r in rows], rows, model.cfg.image_size, cfg.backfill.batch_size, cfg.backfill.num_workers)) as batches:
        for batch_rows, images in batches:
            vectors = model.encode_image(collator.normalize(images).to(device)).float().cpu().numpy()
            check_finite(vectors, batch_rows, [ids[r] for r in batch_rows], str(Path(data_dir) / schema.CATALOG_FILE))
            parts.append(vectors.astype(np.float32))
    dim = int(model.cfg.embed_dim)
    matrix = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    frame = pd.DataFrame({"product_id": [ids[r] for r in rows], "category": [categories[r] for r in rows],
                          "embedding": list(matrix)})
    with artifacts.staged_file(out_file) as tmp:
        frame.to_parquet(tmp, index=False)
    return {"shard": shard, "num_shards": num_shards, "rows": len(rows), "first_row": rows[0] if rows else None,
            "seconds": round(time.perf_counter() - t0, 3), "model_version": model_version(model_dir), "dim": dim}


def read_shards(shard_files: list[str | os.PathLike], catalog_ids: list[str], dim: int, catalog_path: str):
    """Read and check the shard files: exactly the catalog's ids, once each, finite, right dim."""
    import pandas as pd

    frames = []
    for path in shard_files:
        frame = pd.read_parquet(path)
        missing = [c for c in SHARD_COLUMNS if c not in frame.columns]
        if missing:
            raise DataError(path, "shard file lacks columns", detail=str(missing))
        frames.append(frame)
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(SHARD_COLUMNS))
    dup = merged["product_id"].duplicated()
    if dup.any():
        raise DataError(catalog_path, "a product is in more than one shard", detail=str(merged.loc[dup, "product_id"].iloc[0]))
    got, want = set(merged["product_id"]), set(catalog_ids)
    if got != want:
        raise DataError(catalog_path, "the shards do not cover the catalog exactly",
                        detail=f"{len(want - got)} missing (e.g. {sorted(want - got)[:3]}), {len(got - want)} unknown "
                               f"(e.g. {sorted(got - want)[:3]})")
    vectors = np.stack(merged["embedding"].to_numpy()).astype(np.float32) if len(merged) else np.zeros((0, dim), np.float32)
    if vectors.shape[1] != dim:
        raise DataError(shard_files[0], "embedding dimension differs from the model's", detail=f"{vectors.shape[1]} vs {dim}")
    return merged, vectors


def index_shards(store: Store, model_dir: str | os.PathLike, data_dir: str | os.PathLike, shard_files: list[str | os.PathLike],
                 alias: str | None, cfg: IndexConfig, *, progress=lambda _: None,
                 model_uri: str | None = None) -> BackfillReport:
    """Upsert the shard embeddings into the model's versioned collection, flush, index, verify,
    and (if ``alias``) point the alias at it. Idempotent by product_id; a rerun resumes.
    ``model_uri``: the model's durable URI, recorded with the collection (see `backfill`).

    Raises:
        DataError: shard files that do not cover the catalog exactly, or bad vectors.
        VerificationError: the collection failed verification; the alias did not move.
    """
    import json

    from vsearch.models.multitower import load_model

    model_dir, data_dir = str(model_dir), str(data_dir)
    catalog = schema.read_manifest(data_dir, schema.CATALOG_FILE)
    ids = catalog["product_id"].tolist()
    model, _ = load_model(model_dir, device="cpu")
    dim = int(model.cfg.embed_dim)
    del model
    catalog_path = str(Path(data_dir) / schema.CATALOG_FILE)
    merged, vectors = read_shards(shard_files, ids, dim, catalog_path)
    check_finite(vectors, list(range(len(merged))), merged["product_id"].tolist(), catalog_path)
    if cfg.backfill.method == "bulk_import":  # refuse Milvus Lite before creating anything
        from vsearch.indexing.bulk import check_bulk_supported

        check_bulk_supported(store)
    collection, version, created = open_collection(store, model_dir, dim, cfg, model_uri=model_uri)
    report = BackfillReport(collection, version, alias, len(catalog))
    check_collection_dim(store, collection, dim, len(catalog))
    serving = sorted(a for a, c in store.all_alias_targets().items() if c == collection)
    if serving and not created:
        # Same model version, already served: its rows are these very vectors (content-derived version);
        # re-verify rather than rewrite what is being served.
        progress(f"collection {collection} is served by {serving}: verifying it, not rewriting")
    elif cfg.backfill.method == "bulk_import":
        from vsearch.indexing.bulk import import_shards

        import_shards(store, collection, shard_files, dim, cfg, report, progress)
    else:
        t0 = time.perf_counter()
        mark_writing(store, collection)  # a verified collection is not verified once rows change
        stale = sorted(store.existing_ids(collection) - set(ids)) if not created else []
        for start in range(0, len(stale), 1000):
            store.client.delete(collection, filter=f"{PRIMARY} in {json.dumps(stale[start : start + 1000])}")
        report.deleted_stale = len(stale)
        pids, cats = merged["product_id"].tolist(), merged["category"].tolist()
        for start in range(0, len(pids), 1000):
            rows = [{PRIMARY: p, VECTOR: v, CATEGORY: c} for p, v, c in
                    zip(pids[start : start + 1000], vectors[start : start + 1000].tolist(), cats[start : start + 1000])]
            store.client.upsert(collection, rows)
            report.written += len(rows)
        report.write_s = time.perf_counter() - t0
        progress(f"upserted {report.written} rows from {len(shard_files)} shard(s) in {report.write_s:.2f} s")
    return finalize_and_swap(store, collection, ids, dim, cfg, report, alias, progress)
