"""Crash test: a backfill SIGKILLed at random points (decoding workers running), then rerun at
once, ends exact; the alias never points to an unverified collection and `index status` never
calls a collection verified whose rows changed (checked after every kill). The kills at named
stages are tests/integration/test_backfill_faults.py."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import pytest

from vsearch.artifacts import model_version
from vsearch.cli import main as cli
from vsearch.indexing.config import load_index_config
from vsearch.indexing.store import collection_name, connect

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cmd(model, data, uri):
    # batch_size 1 makes the write phase long enough (one upsert per product) to be hit mid-way;
    # two decode workers: a kill must take them down too (else they hold the Lite LOCK).
    return [sys.executable, "-m", "vsearch.cli", "index", "backfill", "--model", str(model), "--data", str(data),
            "--milvus-uri", str(uri), "--alias", "live", "--set", "backfill.batch_size=1", "--set", "backfill.num_workers=2"]


def _check_alias_verified(uri, catalog_rows):
    """The alias, if any, points to a collection recorded verified that really holds the catalog;
    `index status` shows no collection verified whose row count differs from its verification."""
    from vsearch.indexing.cli import status

    with connect(str(uri), load_index_config()) as store:
        for name, col in status(store)["collections"].items():
            assert col["status"] != "verified" or col["rows"] == col["verified_rows"], (name, col)
        target = store.alias_target("live")
        if target is None:
            return None
        assert store.collection_record(target)["status"] == "verified", target
        store.ensure_loaded(target)
        assert store.count(target) == catalog_rows
        return target


def test_backfill_survives_sigkill(tmp_path, tiny_data, tiny_models, capsys):
    import pandas as pd

    uri = tmp_path / "milvus.db"
    ids = pd.read_parquet(tiny_data / "catalog.parquet")["product_id"].tolist()
    old = tiny_models["three_tower"]
    assert cli(["index", "backfill", "--model", str(old), "--data", str(tiny_data), "--milvus-uri", str(uri),
                "--alias", "live", "--set", "backfill.num_workers=0"]) == 0
    capsys.readouterr()
    old_coll = collection_name("vsearch", model_version(old))
    new = tiny_models["image_only"]
    new_coll = collection_name("vsearch", model_version(new))

    rng = random.Random(int(os.environ.get("VSEARCH_CRASH_SEED", "0")))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    kills, seen_stages = 0, []
    for _ in range(20):
        if kills >= 5:
            break
        proc = subprocess.Popen(_cmd(new, tiny_data, uri), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        target_line = rng.randint(1, 8)
        last = ""
        for n, line in enumerate(proc.stdout, 1):
            last = line.strip()
            if n >= target_line:
                break
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
            seen_stages.append(last)
        proc.wait(timeout=60)
        proc.stdout.close()
        target = _check_alias_verified(uri, len(ids))
        # Until a run completes, the alias stays on the old verified collection.
        assert target in (old_coll, new_coll)
    assert kills >= 5, seen_stages

    done = subprocess.run(_cmd(new, tiny_data, uri), capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _check_alias_verified(uri, len(ids)) == new_coll
    with connect(str(uri), load_index_config()) as store:
        store.ensure_loaded(new_coll)
        stored = store.existing_ids(new_coll, ids)
        assert stored == set(ids)
        assert store.count(new_coll) == len(ids)  # count == distinct ids: no duplicates
        rows = store.client.query(new_coll, filter='product_id != ""', output_fields=["product_id"], limit=1000,
                                  consistency_level="Strong")
        assert sorted(r["product_id"] for r in rows) == sorted(ids)
    print("kill points:", seen_stages)
