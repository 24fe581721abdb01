"""Milvus bulk import (vsearch.indexing.bulk): the Parquet writer, Lite refusal, and the sharded
backfill through a real Milvus 2.3.5 standalone server (PyPI ``milvus``) on loopback only.

The server scenario runs in its own network namespace (``unshare -n``, only ``lo``), against one
server start shared with tests/integration/test_indexing_server.py's scenario (milvus_netns.py):
this file run as a script prints one JSON object.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from milvus_netns import check_shared_run, part_main, part_result

from vsearch.config import ConfigError
from vsearch.schema import DataError

pytestmark = [pytest.mark.integration]


# ------------------------------------------------------------------ writer (no server)
def test_writer_converts_shards_and_arrays_to_milvus_parquet(tmp_path):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vsearch.indexing.bulk import write_import_files

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((5, 8)).astype(np.float32)
    shard = tmp_path / "shard-0.parquet"  # what embed_shard writes (pandas, list of float32 arrays)
    pd.DataFrame({"product_id": [f"p{i}" for i in range(5)], "category": ["mug"] * 5, "embedding": list(vecs)}).to_parquet(shard, index=False)
    arrays = (["q0", "q1"], vecs[:2] * 2, ["hat", "hat"])
    files = write_import_files([shard, arrays], tmp_path / "out", dim=8)
    assert files == [str((tmp_path / "out" / f"shard-{n:05d}.parquet").resolve()) for n in (0, 1)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shard-00000.parquet", "shard-00001.parquet"]  # no temp left
    t0, t1 = pq.read_table(files[0]), pq.read_table(files[1])
    # exactly the collection's fields, in the Arrow types Milvus's Parquet reader maps to VARCHAR / FLOAT_VECTOR
    want = pa.schema([("product_id", pa.string()), ("embedding", pa.list_(pa.float32())), ("category", pa.string())])
    assert t0.schema.remove_metadata() == want and t1.schema.remove_metadata() == want
    assert t0.column("product_id").to_pylist() == [f"p{i}" for i in range(5)]
    np.testing.assert_array_equal(np.stack(t0.column("embedding").to_numpy(zero_copy_only=False)), vecs)
    np.testing.assert_array_equal(np.stack(t1.column("embedding").to_numpy(zero_copy_only=False)), vecs[:2] * 2)
    assert t1.column("category").to_pylist() == ["hat", "hat"]


def test_writer_rejects_bad_vectors_naming_file_and_row(tmp_path):
    import pandas as pd

    from vsearch.indexing.bulk import write_import_files

    vecs = np.ones((3, 4), np.float32)
    vecs[2, 1] = np.nan
    shard = tmp_path / "s.parquet"
    pd.DataFrame({"product_id": ["a", "b", "c"], "category": ["x"] * 3, "embedding": list(vecs)}).to_parquet(shard, index=False)
    with pytest.raises(DataError, match=r"s\.parquet, row 2: embedding is NaN/inf") as err:
        write_import_files([shard], tmp_path / "out")
    assert "'c'" in str(err.value)
    with pytest.raises(DataError, match="dimension differs"):
        write_import_files([(["a"], np.ones((1, 4)), ["x"])], tmp_path / "out", dim=8)
    pd.DataFrame({"product_id": ["a"], "embedding": [np.ones(4, np.float32)]}).to_parquet(tmp_path / "nocat.parquet")
    with pytest.raises(DataError, match=r"nocat\.parquet: shard file lacks columns \(\['category'\]\)"):
        write_import_files([tmp_path / "nocat.parquet"], tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.parquet"))  # nothing half-written


def test_lite_is_refused_and_config_is_checked(tmp_path, monkeypatch):
    from pymilvus import MilvusClient

    from vsearch.indexing.bulk import bulk_import
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import connect

    cfg = load_index_config()
    assert cfg.backfill.method == "insert"  # insert stays the default
    with pytest.raises(ConfigError, match="import_dir"):
        load_index_config(None, ["backfill.method=bulk_import"])
    with pytest.raises(ConfigError, match="backfill.method must be one of"):
        load_index_config(None, ["backfill.method=copy"])
    with connect(str(tmp_path / "m.db"), cfg) as store:
        with pytest.raises(ConfigError, match="bulk_import needs a Milvus server"):
            bulk_import(store, "c", ["/x.parquet"])
    # A raw Lite client reaches the RPC: Lite answers UNIMPLEMENTED, reported as the same ConfigError.
    client = MilvusClient(str(tmp_path / "raw.db"))
    try:
        client.create_collection("c", dimension=4)
        with pytest.raises(ConfigError, match="bulk_import needs a Milvus server"):
            bulk_import(client, "c", ["/x.parquet"])
    finally:
        client.close()
        from milvus_lite import server_manager_instance

        server_manager_instance.release_server(str(tmp_path / "raw.db"))


def test_sharded_index_with_bulk_on_lite_fails_before_creating_anything(tmp_path, tiny_data, tiny_models):
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.shards import embed_shard, index_shards
    from vsearch.indexing.store import connect

    cfg = load_index_config(None, ["backfill.num_workers=0", "backfill.method=bulk_import", f"backfill.import_dir={tmp_path / 'imp'}"])
    shard = tmp_path / "s0.parquet"
    embed_shard(tiny_models["image_only"], tiny_data, 0, 1, shard, cfg)
    with connect(str(tmp_path / "m.db"), cfg) as store:
        with pytest.raises(ConfigError, match="bulk_import needs a Milvus server"):
            index_shards(store, tiny_models["image_only"], tiny_data, [shard], "live", cfg)
        assert store.versioned_collections() == [] and store.alias_target("live") is None


# ------------------------------------------------------------------ real server (in a network namespace)
def _part(uri: str, storage_dir: str, work: str, data: str, three: str, image_only: str) -> dict:
    """Runs inside the network namespace, against the shared server (milvus_netns.PARTS)."""
    from vsearch.artifacts import model_version
    from vsearch.indexing.bulk import bulk_import, write_import_files
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.shards import embed_shard, index_shards
    from vsearch.indexing.store import collection_name, connect, hit_id

    root, storage = Path(work), Path(storage_dir)  # common.storageType: local -> import reads this fs
    # Its own collections, registry, alias and import folders: the swap/rollback part of
    # test_indexing_server.py runs at the same time on the same server with the defaults.
    own = ["milvus.collection_prefix=vsbulk", "milvus.registry_collection=vsbulk_registry"]
    alias = "bulk_live"
    good = [*own, "backfill.num_workers=0", "backfill.method=bulk_import", f"backfill.import_dir={storage / 'imports'}", "backfill.import_poll_s=0.2"]
    cfg = load_index_config(None, good)
    out: dict = {}
    shards = {}
    for name, model in (("three", three), ("image_only", image_only)):
        shards[name] = [str(root / f"{name}-{i}.parquet") for i in range(2)]
        for i, f in enumerate(shards[name]):
            embed_shard(model, data, i, 2, f, cfg)
    c3, c1 = (collection_name(cfg.milvus.collection_prefix, model_version(m)) for m in (three, image_only))
    out["collections"] = [c3, c1]
    out["names"] = [c3, c1, cfg.milvus.registry_collection, alias]  # its own on the shared server
    with connect(uri, cfg) as store:
        report = index_shards(store, three, data, shards["three"], alias, cfg)
        out["report"] = {"written": report.written, "alias_moved": report.alias_moved, "index_type": report.index_type}
        out["count_c3"] = store.count(c3)
        out["alias_1"] = store.alias_target(alias)
        out["imports_left"] = sorted(str(p) for p in (storage / "imports").rglob("*.parquet"))
        import pandas as pd

        frame = pd.concat([pd.read_parquet(f) for f in shards["three"]], ignore_index=True)
        picks = [0, 7, 20, 31]
        hits = store.search(alias, [frame["embedding"][i] for i in picks], 3, cfg.search, "IP", consistency="Strong")
        out["search_top1"] = [hit_id(h[0]) for h in hits]
        out["search_want"] = [frame["product_id"][i] for i in picks]

        # Import files Milvus cannot see (an import_dir that is not Milvus's storage): clear error, alias kept.
        bad = load_index_config(None, [*good[:4], f"backfill.import_dir=memory://{root.name}/nowhere"])
        try:
            index_shards(store, image_only, data, shards["image_only"], alias, bad)
            out["invisible_error"] = None
        except DataError as err:
            out["invisible_error"] = str(err)
        out["alias_2"] = store.alias_target(alias)
        out["status_c1_after_fail"] = (store.collection_record(c1) or {}).get("status")

        # A corrupt file and a missing file submitted directly: the error names the file and Milvus's reason.
        files = write_import_files(shards["image_only"], storage / "manual", dim=store.collection_dim(c1))
        Path(files[1]).write_bytes(b"not parquet")
        missing = str(storage / "manual" / "absent.parquet")
        try:
            bulk_import(store, c1, [files[0], files[1], missing], timeout_s=60, poll_s=0.2)
            out["corrupt_error"] = None
        except DataError as err:
            out["corrupt_error"] = str(err)
        out["count_c1_partial"] = store.client.get_collection_stats(c1)["row_count"]
        out["alias_3"] = store.alias_target(alias)

        # Rerun with the right import_dir: the unfinished collection is re-created, imported once, swapped.
        report = index_shards(store, image_only, data, shards["image_only"], alias, cfg)
        out["rerun"] = {"written": report.written, "alias_moved": report.alias_moved}
        out["count_c1"] = store.count(c1)
        out["alias_4"] = store.alias_target(alias)
        out["status_c1"] = (store.collection_record(c1) or {}).get("status")
        # Same model again while served: re-verified, nothing imported (bulk import cannot dedupe).
        report = index_shards(store, image_only, data, shards["image_only"], alias, cfg)
        out["again"] = {"written": report.written, "count": store.count(c1)}
    return out


@pytest.mark.slow
def test_bulk_import_backfill_on_real_server(real_milvus):
    check_shared_run(real_milvus)
    r = part_result(real_milvus, "bulk_import")
    c3, c1 = r["collections"]
    assert r["report"] == {"written": 32, "alias_moved": True, "index_type": "HNSW"}
    assert r["count_c3"] == 32 and r["alias_1"] == c3
    assert r["imports_left"] == []  # import files are removed once Milvus has them in segments
    assert r["search_top1"] == r["search_want"]
    # invisible files: Milvus's own reason ("failed to get file size ... no such file"), the file named, alias kept
    assert r["invisible_error"] and "Milvus bulk import into" in r["invisible_error"] and "shard-00000.parquet" in r["invisible_error"]
    assert "no such file" in r["invisible_error"]
    assert r["alias_2"] == c3 and r["status_c1_after_fail"] == "failed"
    err = r["corrupt_error"]
    assert err and err.split(":")[0].endswith("shard-00001.parquet") and "parquet" in err.split("failed", 1)[1]
    assert "absent.parquet" in err and "1 more failed task" in err
    assert r["count_c1_partial"] == 16 and r["alias_3"] == c3  # the good file landed in an unserved collection only
    assert r["rerun"] == {"written": 32, "alias_moved": True} and r["count_c1"] == 32
    assert r["alias_4"] == c1 and r["status_c1"] == "verified"
    assert r["again"] == {"written": 0, "count": 32}


if __name__ == "__main__":  # this file's part of the shared server run (milvus_netns.PARTS)
    part_main(_part)
