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
    import os

    from vsearch.indexing.backfill import milvus_location, write_record
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.shards import index_shards
    from vsearch.indexing.store import connect

    os.makedirs(index.path, exist_ok=True)
    uri, recorded_uri = milvus_location(milvus_uri, index.path, index.uri)
    cfg = load_index_config(None, list(overrides or []))
    files = sorted((s.path for s in shards), key=lambda p: p)
    with connect(uri, cfg) as store:
        report = index_shards(store, model.path, data.path, files, alias, cfg, model_uri=model.uri,
                              progress=lambda msg: print(f"index: {msg}", flush=True))
    index.metadata.update(write_record(report, index.path, recorded_uri, alias, shards=len(files)))
    for name, value in {**report.metrics(), "shards": float(len(files))}.items():
        metrics.log_metric(name, value)
    return report.collection
