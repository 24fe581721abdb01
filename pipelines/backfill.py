"""The backfill pipeline: re-embed the catalog sharded, then index, verify and swap the alias once.

    importer(model_uri), importer(data_uri) -> plan_shards(num_shards)
      -> dsl.ParallelFor(shards): embed_shard (GPU steps per the compile-time config)
      -> index_embeddings(dsl.Collected(shards)): upsert into <prefix>_<model version>, flush,
         index, verify (row count, ids, finite vectors, sampled recall vs exact search at
         Strong consistency), then move the serving alias; a failed verification leaves the
         alias where it was. The old collection stays: rollback is one alias move.

Used to re-index with the serving model after a catalog change, or a new model outside the
training pipeline (which backfills in one step inside its dsl.If(blessed) branch).
"""

from typing import List

from pipelines.config import PipelineConfig

NAME = "vsearch-backfill"


def build(cfg: PipelineConfig):
    from kfp import dsl
    from kfp.dsl import Dataset, Model

    from components.embed_shard import embed_shard
    from components.index_embeddings import index_embeddings
    from components.plan_shards import plan_shards
    from pipelines.wiring import configure, import_artifact

    @dsl.pipeline(name=NAME, description="Re-embed the catalog in parallel shards, write a new versioned Milvus "
                  "collection, verify it and move the serving alias.")
    def backfill_pipeline(
        model_uri: str,
        data_uri: str,
        num_shards: int = 4,
        milvus_uri: str = "",
        alias: str = "vsearch_serving",
        index_overrides: List[str] = [],
    ) -> str:
        model = import_artifact(model_uri, Model, "Import model")
        data = import_artifact(data_uri, Dataset, "Import catalog")
        plan = configure(plan_shards(num_shards=num_shards), "Plan shards", cfg)
        with dsl.ParallelFor(plan.output, name="shards", parallelism=cfg.resources.shard_parallelism) as shard:
            embedded = configure(
                embed_shard(model=model.output, data=data.output, shard=shard, num_shards=num_shards,
                            overrides=index_overrides),
                "Embed catalog shard",
                cfg,
            )
        index = configure(
            index_embeddings(model=model.output, data=data.output, shards=dsl.Collected(embedded.outputs["embeddings"]),
                             milvus_uri=milvus_uri, alias=alias, overrides=index_overrides),
            "Index, verify and swap alias",
            cfg,
        )
        return index.outputs["Output"]

    return backfill_pipeline
