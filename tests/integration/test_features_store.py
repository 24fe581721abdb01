"""Feast feature repo end to end: point-in-time training set, training on it, materialize +
online lookups against SQLite and a real Redis server."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from vsearch import schema
from vsearch.cli import main
from vsearch.features import online
from vsearch.features import repo as feature_repo
from vsearch.features.training_set import point_in_time_titles
from vsearch.schema import DataError

pytestmark = pytest.mark.integration

OLD, NEW = "old title before the relaunch", "new title after the relaunch"


@pytest.fixture(scope="module")
def history_case(tiny_data, tmp_path_factory):
    """The tiny preset plus a product history in which product P changed its title at time
    `change`; P's clicks are placed 1 s before, exactly at, and 1 day after the change."""
    root = tmp_path_factory.mktemp("pit")
    data = root / "data"
    shutil.copytree(tiny_data, data)
    catalog = pd.read_parquet(data / schema.CATALOG_FILE)
    inter = pd.read_parquet(data / schema.INTERACTIONS_FILE)
    counts = inter["product_id"].value_counts()
    pid = counts[counts >= 2].index[0]
    rows = inter.index[inter["product_id"] == pid].tolist()
    change = inter["event_timestamp"].min() + pd.Timedelta(days=3)
    stamps = [change - pd.Timedelta(seconds=1), change] + [change + pd.Timedelta(days=1)] * (len(rows) - 2)
    inter.loc[rows, "event_timestamp"] = stamps
    inter.to_parquet(data / schema.INTERACTIONS_FILE, index=False)
    first = change - pd.Timedelta(days=30)
    p = catalog.set_index("product_id").loc[pid]
    history = pd.DataFrame({
        "product_id": [pid, pid],
        "image_uri": [p["image_uri"]] * 2,
        "title": [OLD, NEW],
        "category": [p["category"]] * 2,
        "event_timestamp": pd.to_datetime([first, change], utc=True),
    })
    history.to_parquet(data / schema.PRODUCT_HISTORY_FILE, index=False)
    out, repo = root / "training_set", root / "repo"
    assert main(["features", "build-training-set", "--data", str(data), "--out", str(out), "--repo", str(repo)]) == 0
    return {"data": data, "out": out, "repo": repo, "pid": pid, "rows": rows, "change": change, "first": first}


def test_a_click_sees_the_title_the_product_had_at_click_time(history_case, capsys):
    built = pd.read_parquet(history_case["out"] / schema.INTERACTIONS_FILE)
    source = pd.read_parquet(history_case["data"] / schema.INTERACTIONS_FILE)
    pd.testing.assert_frame_equal(built.drop(columns="title"), source)  # same rows, same order
    rows = history_case["rows"]
    assert built.at[rows[0], "title"] == OLD  # 1 s before the change
    assert built.at[rows[1], "title"] == NEW  # exactly at the change: the new version is effective
    assert len(rows) >= 4 and all(built.loc[rows[2:], "title"] == NEW)  # same product, same instant: none dropped
    others = built.drop(index=rows)
    catalog = pd.read_parquet(history_case["data"] / schema.CATALOG_FILE).set_index("product_id")["title"]
    assert (others["title"] == others["product_id"].map(catalog)).all()  # no history: the catalog title
    record = json.loads((history_case["out"] / "training_set.json").read_text())
    assert record["titles_differing_from_catalog"] == len(rows) and record["history"] is True
    # The training set is a complete data folder: validated contract, URIs resolve inside it.
    catalog_df, inter_df, _ = schema.read_dataset(history_case["out"])
    for uri in list(catalog_df["image_uri"]) + list(inter_df["query_image_uri"]):
        assert (history_case["out"] / uri).is_file()


def test_a_click_before_the_first_product_version_is_a_data_error(history_case):
    store = online._store(history_case["repo"])
    pid, first = history_case["pid"], history_case["first"]
    entity = pd.DataFrame({
        "query_id": ["early", "at_first"],
        "product_id": [pid, pid],
        "event_timestamp": pd.to_datetime([first - pd.Timedelta(hours=1), first], utc=True),
    })
    assert list(point_in_time_titles(store, entity.iloc[1:], "x.parquet")) == [OLD]
    with pytest.raises(DataError, match=r"x.parquet, row 0: clicked product has no feature version at or before the click time"):
        point_in_time_titles(store, entity, "x.parquet")


def test_training_on_the_feast_built_set_gives_the_same_metrics(tiny_data, tiny_models, tmp_path):
    from vsearch.config import load_config
    from vsearch.evaluation.evaluate import evaluate
    from vsearch.training.loop import train

    built = tmp_path / "training_set"
    assert main(["features", "build-training-set", "--data", str(tiny_data), "--out", str(built)]) == 0
    inter = pd.read_parquet(built / schema.INTERACTIONS_FILE)
    assert "title" in inter.columns and inter["title"].notna().all()
    model = tmp_path / "model"
    train(load_config("tiny"), built, model, progress=False)  # same config and seed as tiny_models["three_tower"]
    raw = evaluate({"m": tiny_models["three_tower"]}, tiny_data, tmp_path / "eval_raw")
    feast = evaluate({"m": model}, built, tmp_path / "eval_feast")
    assert raw["models"] == feast["models"]
    assert (model / "model.safetensors").read_bytes() == (tiny_models["three_tower"] / "model.safetensors").read_bytes()


def test_materialize_and_lookup_with_sqlite(history_case, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert main(["features", "materialize", "--data", str(history_case["data"]), "--repo", str(repo)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["online_store"] == "sqlite" and (repo / "data" / "online.db").is_file()
    catalog = pd.read_parquet(history_case["data"] / schema.CATALOG_FILE).set_index("product_id")
    pid, other = history_case["pid"], catalog.index[-1]
    found = online.lookup_products(repo, [pid, other, "no-such-product", other])
    assert set(found) == {pid, other}
    assert found[pid]["title"] == NEW  # the latest version is online
    assert found[other] == {"title": catalog.at[other, "title"], "image_uri": catalog.at[other, "image_uri"],
                            "category": catalog.at[other, "category"]}
    assert online.lookup_products(repo, []) == {}
    assert main(["features", "lookup", "--repo", str(repo), other]) == 0
    assert json.loads(capsys.readouterr().out) == {other: found[other]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def redis_server(tmp_path):
    """Debian's redis-server on a free loopback port, no persistence; killed afterwards."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (make sysdeps)")
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield client, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_materialize_and_lookup_with_redis(history_case, redis_server, tmp_path, monkeypatch):
    client, port = redis_server
    monkeypatch.setenv("VSEARCH_FEAST_ONLINE_STORE", f'{{type: redis, connection_string: "127.0.0.1:{port}"}}')
    repo = tmp_path / "repo"
    summary = online.materialize(history_case["data"], repo)
    assert summary["online_store"] == "redis"
    assert not (repo / "data" / "online.db").exists()
    assert client.dbsize() > 0  # the features are in Redis, not in a file
    pid = history_case["pid"]
    catalog = pd.read_parquet(history_case["data"] / schema.CATALOG_FILE)
    found = online.lookup_products(repo, list(catalog["product_id"]) + ["no-such-product"])
    assert len(found) == len(catalog) and found[pid]["title"] == NEW
    client.flushall()  # the store really is Redis: emptying it empties the lookups
    assert online.lookup_products(repo, [pid]) == {}


def test_feast_plan_works_in_the_shipped_feature_repo(tmp_path):
    """Feast's own CLI on a copy of feature_repo/ as shipped, no vsearch variables set (Feast
    expands ${VAR} but knows no defaults: the file once failed here on ${VSEARCH_FEAST_PROJECT})."""
    import os
    import sys

    repo = tmp_path / "feature_repo"
    shutil.copytree(feature_repo.definitions_dir(), repo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSEARCH_FEAST_")}
    env.update(FEAST_USAGE="False", DO_NOT_TRACK="1")
    feast = Path(sys.executable).with_name("feast")
    proc = subprocess.run([str(feast), "plan"], cwd=repo, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "Created feature service product_features_v1" in out and "Created feature view product_text" in out


def test_materialize_features_loads_the_configured_store_from_validated_data_only(
        history_case, redis_server, tmp_path, monkeypatch):
    """The pipeline step that loads the cluster's online store: Redis and a registry named by the
    environment (Secret vsearch-feast on a cluster); the search side then reads them."""
    from kfp.dsl import Artifact, Dataset, Metrics

    from components.materialize_features import materialize_features

    client, port = redis_server
    validation = tmp_path / "validation"
    validation.mkdir()
    (validation / "validation.json").write_text(json.dumps({"success": True}))

    def run(name):
        out = Artifact(name=name, uri=str(tmp_path / name))
        metrics = Metrics(name="m", uri=str(tmp_path / f"{name}.metrics"))
        materialize_features.python_func(data=Dataset(name="d", uri=str(history_case["data"])),
                                         validation=Dataset(name="v", uri=str(validation)), materialization=out, metrics=metrics)
        return json.loads((tmp_path / name).read_text()), out, metrics

    for var in feature_repo.ENV_KEYS:
        monkeypatch.delenv(var, raising=False)
    skipped, _, metrics = run("unconfigured")  # a local run: no shared store, nothing written, said so
    assert skipped["materialized"] is False and "VSEARCH_FEAST_ONLINE_STORE" in skipped["reason"]
    assert metrics.metadata["materialized"] == 0.0 and client.dbsize() == 0

    store = f'{{type: redis, connection_string: "127.0.0.1:{port}"}}'
    monkeypatch.setenv("VSEARCH_FEAST_ONLINE_STORE", store)
    monkeypatch.setenv("VSEARCH_FEAST_REGISTRY", "data/registry.db")  # would vanish with the step's temporary repo
    with pytest.raises(Exception, match="must be a registry URL or absolute path"):
        run("relative-registry")
    registry = tmp_path / "shared" / "registry.db"
    monkeypatch.setenv("VSEARCH_FEAST_REGISTRY", str(registry))
    summary, out, metrics = run("materialized")
    catalog = pd.read_parquet(history_case["data"] / schema.CATALOG_FILE)
    assert summary["materialized"] is True and summary["online_store"] == "redis" and summary["registry"] == str(registry)
    assert summary["products"] == catalog["product_id"].nunique() == metrics.metadata["products"]
    assert "repo" not in summary and str(port) not in json.dumps(summary)  # no pod-local path, no connection string
    # The serving side (its own repo folder, same environment) finds every product, P with its new title.
    reader = tmp_path / "reader"
    reader.mkdir()
    shutil.copyfile(feature_repo.definitions_dir() / feature_repo.CONFIG_FILE, reader / feature_repo.CONFIG_FILE)
    online.clear_cache()
    found = online.lookup_products(reader, list(catalog["product_id"]))
    assert len(found) == len(catalog) and found[history_case["pid"]]["title"] == NEW

    (validation / "validation.json").write_text(json.dumps({"success": False}))
    client.flushall()
    with pytest.raises(DataError, match="no passing validation"):
        run("invalid")
    assert client.dbsize() == 0
