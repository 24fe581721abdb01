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
    from vsearch.indexing.backfill import run_index_step
    from vsearch.indexing.shards import index_shards

    files = sorted(s.path for s in shards)
    report, record = run_index_step(
        milvus_uri, index.path, index.uri, list(overrides or []), alias,
        lambda store, cfg: index_shards(store, model.path, data.path, files, alias, cfg, model_uri=model.uri,
                                        progress=lambda msg: print(f"index: {msg}", flush=True)),
        shards=len(files))
    index.metadata.update(record)
    for name, value in {**report.metrics(), "shards": float(len(files))}.items():
        metrics.log_metric(name, value)
    return report.collection
