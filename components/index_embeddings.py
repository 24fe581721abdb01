"""index_embeddings: write the collected shard embeddings to Milvus, verify, then move the alias."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def index_embeddings(
    model: Input[Model],
    data: Input[Dataset],
    shards: Input[List[Dataset]],
    index: Output[Artifact],
    metrics: Output[Metrics],
    milvus_uri: str = "",
    alias: str = "vsearch_serving",
    overrides: Optional[List[str]] = None,
) -> str:
    """Upsert every shard into the model's versioned collection; flush, index, verify, swap the alias.

    Args:
        model: The model folder (its version names the collection).
        data: Dataset folder; the shards must cover its catalog exactly once.
        shards: The embed_shard outputs (dsl.Collected).
        milvus_uri: Milvus endpoint (token from VSEARCH_MILVUS_TOKEN, a Kubernetes Secret).
            Empty: a Milvus Lite database inside this step's output (index/milvus.db).
        alias: Serving alias, moved only to a verified collection.
        overrides: Dotted index config overrides, e.g. "verify.min_recall=0.98".

    Returns:
        index: Folder with backfill.json (collection, verification, timings) and, for Milvus
            Lite, milvus.db.
        metrics: rows written, recall@k of the index vs exact search, seconds per phase.
        Output: The collection the alias now points to.
    """
    import dataclasses
    import json
    import os

    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.shards import index_shards
    from vsearch.indexing.store import connect

    os.makedirs(index.path, exist_ok=True)
    uri = milvus_uri or os.path.join(index.path, "milvus.db")
    cfg = load_index_config(None, list(overrides or []))
    files = sorted((s.path for s in shards), key=lambda p: p)
    with connect(uri, cfg) as store:
        report = index_shards(store, model.path, data.path, files, alias, cfg, model_uri=model.uri,
                              progress=lambda msg: print(f"index: {msg}", flush=True))
    # A Lite database is recorded where it outlives this pod: inside the index artifact's URI.
    result = {**dataclasses.asdict(report), "milvus_uri": milvus_uri or f"{index.uri.rstrip('/')}/milvus.db",
              "shards": len(files)}
    with open(os.path.join(index.path, "backfill.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    metrics.log_metric("rows", float(report.catalog_rows))
    metrics.log_metric("written", float(report.written))
    metrics.log_metric("shards", float(len(files)))
    metrics.log_metric("recall_at_k", float(report.verify.get("recall") or 0.0))
    for phase in ("write_s", "finalize_s", "verify_s"):
        metrics.log_metric(phase, round(float(getattr(report, phase)), 3))
    index.metadata.update({"collection": report.collection, "alias": alias, "model_version": report.model_version,
                           "milvus_uri": result["milvus_uri"], "index_type": report.index_type,
                           "previous_collection": report.previous_collection})
    return report.collection
