"""backfill_embeddings: embed the catalog into a new versioned Milvus collection, verify, move an alias."""

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
    alias_role: str = "",
    overrides: Optional[List[str]] = None,
    unless_champion: Optional[Input[Artifact]] = None,
) -> str:
    """Re-embed the whole catalog with the model; only a verified collection gets the alias.

    Args:
        model: The model folder; its version names the collection.
        data: Dataset folder whose catalog is indexed.
        milvus_uri: Milvus endpoint (http://host:19530; the token comes from the
            VSEARCH_MILVUS_TOKEN environment variable, a Kubernetes Secret). Empty: a Milvus
            Lite database inside this step's output (index/milvus.db), for local runs only
            (a release's arms must share one Milvus: set it).
        alias: The live (serving) alias of the deployment.
        alias_role: Which alias this step moves: "" the live alias itself (re-indexing the
            champion), "candidate" <alias>_candidate (a blessed candidate; the live alias is
            never touched), "baseline" <alias>_baseline (the control of a first deployment).
        overrides: Dotted index config overrides, e.g. "index.type=IVF_FLAT".
        unless_champion: A blessing folder: when it names a champion, nothing is indexed
            (the champion's collection is the control; a baseline is indexed only for a
            first deployment).

    Returns:
        index: Folder with backfill.json (collection, verification, timings) and, for Milvus
            Lite, milvus.db.
        metrics: rows written, recall@k of the index vs exact search, seconds per phase.
        Output: The collection the alias now points to.
    """
    import json
    import os

    from vsearch.blessing import read_blessing
    from vsearch.indexing.backfill import RECORD_FILE, backfill, run_index_step
    from vsearch.indexing.store import baseline_alias, candidate_alias

    if unless_champion is not None and read_blessing(unless_champion.path).has_champion:
        os.makedirs(index.path, exist_ok=True)
        with open(os.path.join(index.path, RECORD_FILE), "w") as fh:
            json.dump({"skipped": "the blessing has a champion: its collection behind the live alias is the control"}, fh)
        index.metadata.update({"skipped": True, "alias": alias})
        metrics.log_metric("rows", 0.0)
        return ""
    target_alias = {"": alias, "candidate": candidate_alias(alias), "baseline": baseline_alias(alias)}[alias_role]
    report, record = run_index_step(
        milvus_uri, index.path, index.uri, list(overrides or []), target_alias,
        lambda store, cfg: backfill(model.path, data.path, store, target_alias, cfg, model_uri=model.uri,
                                    progress=lambda msg: print(f"backfill: {msg}", flush=True)))
    index.metadata.update(record)
    for name, value in report.metrics().items():
        metrics.log_metric(name, value)
    return report.collection
