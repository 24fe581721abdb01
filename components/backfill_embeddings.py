"""backfill_embeddings: embed the catalog into a new versioned Milvus collection, verify, move the alias."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def backfill_embeddings(
    model: Input[Model],
    data: Input[Dataset],
    index: Output[Artifact],
    metrics: Output[Metrics],
    milvus_uri: str = "",
    alias: str = "vsearch_serving",
    overrides: Optional[List[str]] = None,
) -> str:
    """Re-embed the whole catalog with the model; only a verified collection gets the alias.

    Args:
        model: The blessed model folder; its version names the collection.
        data: Dataset folder whose catalog is indexed.
        milvus_uri: Milvus endpoint (http://host:19530; the token comes from the
            VSEARCH_MILVUS_TOKEN environment variable, a Kubernetes Secret). Empty: a Milvus
            Lite database inside this step's output (index/milvus.db), for local runs.
        alias: Serving alias moved to the new collection once it is verified.
        overrides: Dotted index config overrides, e.g. "index.type=IVF_FLAT".

    Returns:
        index: Folder with backfill.json (collection, verification, timings) and, for Milvus
            Lite, milvus.db.
        metrics: rows written, recall@k of the index vs exact search, seconds per phase.
        Output: The collection the alias now points to.
    """
    import dataclasses
    import json
    import os

    from vsearch.indexing.backfill import backfill
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import connect

    os.makedirs(index.path, exist_ok=True)
    uri = milvus_uri or os.path.join(index.path, "milvus.db")
    cfg = load_index_config(None, list(overrides or []))
    with connect(uri, cfg) as store:
        report = backfill(model.path, data.path, store, alias, cfg, progress=lambda msg: print(f"backfill: {msg}", flush=True))
    result = {**dataclasses.asdict(report), "milvus_uri": uri if not milvus_uri else milvus_uri}
    with open(os.path.join(index.path, "backfill.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    metrics.log_metric("rows", float(report.catalog_rows))
    metrics.log_metric("written", float(report.written))
    metrics.log_metric("recall_at_k", float(report.verify.get("recall") or 0.0))
    for phase in ("write_s", "finalize_s", "verify_s"):
        metrics.log_metric(phase, round(float(getattr(report, phase)), 3))
    index.metadata.update({"collection": report.collection, "alias": alias, "model_version": report.model_version,
                           "milvus_uri": result["milvus_uri"], "index_type": report.index_type,
                           "previous_collection": report.previous_collection})
    return report.collection
