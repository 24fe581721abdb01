"""The sharded backfill components (plan_shards -> embed_shard x N -> index_embeddings) on the tiny
preset with Milvus Lite: every catalog product indexed once, verified, and only then the alias moved."""

import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset, Metrics, Model

from components.embed_shard import embed_shard
from components.index_embeddings import index_embeddings
from components.plan_shards import plan_shards
from vsearch.artifacts import model_version
from vsearch.config import ConfigError
from vsearch.indexing.shards import shard_rows
from vsearch.schema import DataError

OVERRIDES = ["verify.sample_size=30", "backfill.num_workers=0", "backfill.batch_size=8"]


def _artifact(cls, path):
    return cls(name=path.name, uri=str(path), metadata={})


def _embed(tmp_path, tiny_data, model_dir, num_shards):
    shards = []
    for shard in plan_shards.python_func(num_shards=num_shards):
        out = _artifact(Dataset, tmp_path / f"shard{shard}.parquet")
        embed_shard.python_func(model=_artifact(Model, model_dir), data=_artifact(Dataset, tiny_data), shard=shard,
                                num_shards=num_shards, embeddings=out, metrics=_artifact(Metrics, tmp_path / f"m{shard}"),
                                overrides=OVERRIDES)
        shards.append(out)
    return shards


def _index(tmp_path, tiny_data, model_dir, shards, db):
    index = _artifact(Artifact, tmp_path / "index")
    collection = index_embeddings.python_func(
        model=_artifact(Model, model_dir), data=_artifact(Dataset, tiny_data), shards=shards, index=index,
        metrics=_artifact(Metrics, tmp_path / "im"), milvus_uri=str(db), alias="vsearch_serving", overrides=OVERRIDES)
    return collection, index


def test_shards_cover_every_row_once():
    for n in (0, 1, 7, 32, 33):
        for k in (1, 2, 3, 5):
            rows = [r for s in range(k) for r in shard_rows(n, s, k)]
            assert rows == list(range(n))
    with pytest.raises(ValueError):
        shard_rows(10, 2, 2)
    assert plan_shards.python_func(num_shards=3) == [0, 1, 2]
    with pytest.raises(ConfigError, match="num_shards"):
        plan_shards.python_func(num_shards=0)


def test_sharded_backfill_indexes_the_catalog_verifies_and_moves_the_alias(tmp_path, tiny_data, tiny_models):
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import connect, hit_id

    catalog = pd.read_parquet(tiny_data / "catalog.parquet")
    shards = _embed(tmp_path, tiny_data, tiny_models["four_tower"], num_shards=3)
    frames = [pd.read_parquet(s.path) for s in shards]
    assert sum(map(len, frames)) == len(catalog) and shards[0].metadata["num_shards"] == 3
    assert pd.concat(frames)["product_id"].tolist() == catalog["product_id"].tolist()

    db = tmp_path / "milvus.db"
    # A missing shard is refused before anything is written or the alias moves.
    with pytest.raises(DataError, match="do not cover the catalog exactly"):
        _index(tmp_path / "partial", tiny_data, tiny_models["four_tower"], shards[:2], db)
    collection, index = _index(tmp_path, tiny_data, tiny_models["four_tower"], shards, db)
    assert collection.endswith(model_version(tiny_models["four_tower"]).replace("-", "_"))
    assert index.metadata["collection"] == collection and index.metadata["previous_collection"] is None
    with connect(str(db), load_index_config()) as store:
        assert store.alias_target("vsearch_serving") == collection
        assert store.count(collection) == len(catalog)
        # The stored vector of a product is its shard's embedding (searching it finds itself first).
        pid, vector = frames[1]["product_id"].iloc[0], frames[1]["embedding"].iloc[0]
        store.ensure_loaded(collection)
        hits = store.search(collection, [vector], 1, load_index_config().search, "IP", consistency="Strong")
        assert hit_id(hits[0][0]) == pid

    # A second model's backfill moves the alias; the first collection stays (rollback = one alias move).
    other_shards = _embed(tmp_path / "other", tiny_data, tiny_models["three_tower"], num_shards=2)
    other, index2 = _index(tmp_path / "other", tiny_data, tiny_models["three_tower"], other_shards, db)
    assert other != collection and index2.metadata["previous_collection"] == collection
    with connect(str(db), load_index_config()) as store:
        assert store.alias_target("vsearch_serving") == other and store.client.has_collection(collection)
