"""Feature repo pieces without a Feast apply: ${VAR} substitution, the definitions (generated
from the schema, described and tagged), the product feature frame."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest
import yaml

from vsearch import schema
from vsearch.config import ConfigError
from vsearch.features import repo as feature_repo
from vsearch.schema import DataError


def test_feature_store_yaml_is_plain_feast_config_that_the_environment_overrides(tmp_path, monkeypatch):
    """Feast's CLI expands ${VAR} without defaults: the shipped file has none (feast plan works in
    feature_repo/ as it is); vsearch's environment variables override its keys."""
    text = (feature_repo.definitions_dir() / feature_repo.CONFIG_FILE).read_text()
    assert "${" not in text
    local = feature_repo.resolve(text, env={})
    assert local == yaml.safe_load(text)
    assert local["provider"] == "local" and local["offline_store"]["type"] == "file" and local["project"] == "vsearch"
    assert local["online_store"] == {"type": "sqlite", "path": "data/online.db"}
    assert local["registry"] == {"registry_type": "file", "path": "data/registry.db"}
    prod = feature_repo.resolve(text, env={"VSEARCH_FEAST_ONLINE_STORE": '{type: redis, connection_string: "redis:6379"}',
                                           "VSEARCH_FEAST_REGISTRY": "s3://bucket/registry.db", "VSEARCH_FEAST_PROJECT": ""})
    assert prod["online_store"] == {"type": "redis", "connection_string": "redis:6379"}
    assert prod["registry"] == {"registry_type": "file", "path": "s3://bucket/registry.db"}
    assert prod["project"] == "vsearch"  # empty: not set
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        feature_repo.resolve(text, env={"VSEARCH_FEAST_ONLINE_STORE": "redis:6379"})
    # A file with ${VAR}s (the cluster's copy): expanded from the process environment as Feast's
    # own loader does (feast.repo_config.load_repo_config); one left unset is refused, not kept as text.
    from feast.repo_config import load_repo_config

    monkeypatch.setenv("SHOP_PROJECT", "shop")
    monkeypatch.setenv("SHOP_STORE", "shop.db")
    cluster = text.replace("project: vsearch", "project: ${SHOP_PROJECT}").replace("data/online.db", "$SHOP_STORE")
    assert feature_repo.resolve(cluster)["project"] == "shop"  # default env: the process environment
    assert feature_repo.resolve(cluster)["online_store"]["path"] == "shop.db"
    (tmp_path / "feast.yaml").write_text(cluster)
    feast = load_repo_config(tmp_path, tmp_path / "feast.yaml")  # Feast reads it the same way
    assert (feast.project, feast.online_store.path) == ("shop", "shop.db")
    with pytest.raises(ConfigError, match=r"\$\{NOPE\} is not set"):
        feature_repo.resolve("x: ${NOPE}", env={})


def test_variables_are_expanded_from_the_env_given_not_the_process_environment(monkeypatch):
    monkeypatch.delenv("X", raising=False)
    monkeypatch.setenv("Y", "from-process")
    env = {"X": "shop", "Z": "z"}
    assert feature_repo.resolve("project: ${X}\npath: $Z/${X}.db\ncost: 5$\n", env=env) == {"project": "shop", "path": "z/shop.db", "cost": "5$"}
    assert "X" not in os.environ
    with pytest.raises(ConfigError, match=r"\$\{Y\} is not set"):
        feature_repo.resolve("project: ${Y}", env=env)  # an env given is the whole environment


def test_config_loads_with_paths_relative_to_the_working_repo(tmp_path):
    shutil.copyfile(feature_repo.definitions_dir() / feature_repo.CONFIG_FILE, tmp_path / feature_repo.CONFIG_FILE)
    config = feature_repo.load_config(tmp_path)
    assert config.online_store.type == "sqlite" and config.project == "vsearch"
    assert config.repo_path == tmp_path.resolve()
    with pytest.raises(ConfigError, match="not a vsearch feature repo"):
        feature_repo.load_config(tmp_path / "missing")


def test_definitions_follow_the_schema_and_are_described_and_tagged():
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    objects = feature_repo.load_definitions(feature_repo.definitions_dir())
    kinds = {type(o).__name__ for o in objects}
    assert {"Entity", "FileSource", "FeatureView", "FeatureService"} <= kinds
    for obj in objects:
        assert obj.description, f"{obj.name} has no description"
        assert obj.tags, f"{obj.name} has no tags"
    (entity,) = [o for o in objects if isinstance(o, Entity)]
    assert entity.join_key == "product_id"
    views = {o.name: o for o in objects if isinstance(o, FeatureView)}
    features = {f.name for v in views.values() for f in v.features}
    assert features == set(feature_repo.FEATURES)
    contract = {c.name for c in schema.PRODUCT_HISTORY_COLUMNS}
    assert features | {"product_id", "event_timestamp"} == contract
    (service,) = [o for o in objects if isinstance(o, FeatureService)]
    assert service.name == feature_repo.FEATURE_SERVICE and service.tags["version"] == "1"
    (source,) = [o for o in objects if isinstance(o, DataSource)]
    assert source.path == feature_repo.SOURCE_FILE


def test_product_feature_frame_from_catalog_or_history(tiny_data, tmp_path):
    frame = feature_repo.product_feature_frame(tiny_data)
    catalog = pd.read_parquet(tiny_data / schema.CATALOG_FILE)
    assert len(frame) == len(catalog) and (frame["event_timestamp"] == feature_repo.CATALOG_EPOCH).all()
    assert str(frame["event_timestamp"].dtype) == "datetime64[ns, UTC]"

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    pid = catalog.at[0, "product_id"]
    history = pd.DataFrame({"product_id": [pid, pid], "image_uri": [catalog.at[0, "image_uri"]] * 2, "title": ["a", "b"],
                            "category": [catalog.at[0, "category"]] * 2,
                            "event_timestamp": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True)})
    history.to_parquet(data / schema.PRODUCT_HISTORY_FILE, index=False)
    frame = feature_repo.product_feature_frame(data)
    assert len(frame) == len(catalog) + 1
    assert list(frame.loc[frame["product_id"] == pid, "title"]) == ["a", "b"]  # history replaces the catalog row

    history.loc[1, "event_timestamp"] = history.loc[0, "event_timestamp"]
    history.to_parquet(data / schema.PRODUCT_HISTORY_FILE, index=False)
    with pytest.raises(DataError, match=r"product_history.parquet, row 1: \(product_id, event_timestamp\) must be unique"):
        feature_repo.product_feature_frame(data)
    history.loc[1, "title"] = ""
    history.to_parquet(data / schema.PRODUCT_HISTORY_FILE, index=False)
    with pytest.raises(DataError, match=r"product_history.parquet, row 1: column 'title' must not be empty"):
        feature_repo.product_feature_frame(data)


def test_importing_vsearch_features_does_not_import_feast():
    import subprocess
    import sys

    code = "import sys, vsearch.features.repo, vsearch.features.online, vsearch.features.cli, vsearch.validation.cli; " \
           "print([m for m in ('feast', 'great_expectations') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_definitions_are_the_projects_feature_repo_not_a_path_next_to_the_package(tmp_path, monkeypatch):
    monkeypatch.delenv(feature_repo.DEFINITIONS_ENV, raising=False)
    project = tmp_path / "project"
    (project / "feature_repo").mkdir(parents=True)
    (project / "feature_repo" / feature_repo.CONFIG_FILE).write_text("project: x\n")
    (project / "runs" / "a").mkdir(parents=True)
    assert feature_repo.definitions_dir(project / "runs" / "a") == project / "feature_repo"
    monkeypatch.chdir(project)
    assert feature_repo.definitions_dir() == project / "feature_repo"
    with pytest.raises(ConfigError, match=feature_repo.DEFINITIONS_ENV):
        feature_repo.definitions_dir(tmp_path)
    monkeypatch.setenv(feature_repo.DEFINITIONS_ENV, str(project / "feature_repo"))
    assert feature_repo.definitions_dir(tmp_path) == project / "feature_repo"
