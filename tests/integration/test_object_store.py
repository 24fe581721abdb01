"""Object storage end to end: the s3:// paths of the k8s overlays through the project's own
object-store packages (`vsearch[objectstore]`: s3fs for fsspec URIs, boto3 for Feast's S3
registry), against an S3 API server on loopback.

No S3 or MinIO server installs from the package index, so the server is moto's (a Flask app
speaking the S3 REST protocol: signed requests, XML bodies, conditional writes); the clients
are the real ones. Endpoint and credentials come from the environment exactly as in a pod:
AWS_ENDPOINT_URL (botocore, so s3fs and boto3 alike), FEAST_S3_ENDPOINT_URL (Feast's registry
store), AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (Secret vsearch-object-store)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from vsearch import schema
from vsearch.artifacts import model_version
from vsearch.cli import main
from vsearch.registry import Registry, RegistryConflict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # the registry tests' real blessings
from test_registry import bless, make_model_dir, race_on_the_next_version  # noqa: E402

pytestmark = pytest.mark.integration

BUCKET = "vsearch-test"  # the bucket of the `s3` fixture (tests/conftest.py)


def _keys(client, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def test_champion_registry_on_s3_promote_rollback_and_compare_and_swap(s3, tmp_path):
    store = f"s3://{BUCKET}/registry"
    reg = Registry(store)
    assert not reg.local and reg.current() is None
    m1, m2 = make_model_dir(tmp_path / "m1", 1), make_model_dir(tmp_path / "m2", 2)
    reg.promote(bless(tmp_path, "a", m1))
    reg.promote(bless(tmp_path, "b", m2, champion_dir=m1))
    assert _keys(s3, "registry/") == ["registry/records/000001.json", "registry/records/000002.json"]
    assert Registry(store).current()["model_version"] == model_version(m2)  # a fresh reader sees it
    # The CAS: version 2 exists, so a change based on version 1 is refused by the object store.
    with pytest.raises(RegistryConflict):
        reg._commit(1, "promote", {"model_version": "late"}, None)
    assert reg.rollback()["champion"]["model_version"] == model_version(m1)
    assert [r["action"] for r in Registry(store).history()] == ["promote", "promote", "rollback"]


def test_concurrent_promotions_on_s3_exactly_one_wins(s3):
    """Eight writers create the same next record at once: S3's conditional create
    (If-None-Match: *, s3fs mode "xb") lets exactly one through, the others get a conflict."""
    reg = Registry(f"s3://{BUCKET}/race")
    assert race_on_the_next_version(reg) == ["conflict"] * 7 + ["ok"]
    assert _keys(s3, "race/") == ["race/records/000001.json"]
    winner = Registry(f"s3://{BUCKET}/race").head()["champion"]["model_version"]
    assert winner.startswith("3t-")


def test_feast_registry_on_s3_builds_the_same_training_set(s3, tiny_data, tmp_path, monkeypatch):
    local = tmp_path / "local"
    assert main(["features", "build-training-set", "--data", str(tiny_data), "--out", str(local)]) == 0
    monkeypatch.setenv("VSEARCH_FEAST_REGISTRY", f"s3://{BUCKET}/feast/registry.db")
    remote, repo = tmp_path / "remote", tmp_path / "repo"
    assert main(["features", "build-training-set", "--data", str(tiny_data), "--out", str(remote), "--repo", str(repo)]) == 0
    head = s3.head_object(Bucket=BUCKET, Key="feast/registry.db")
    assert head["ContentLength"] > 0
    assert not (repo / "data" / "registry.db").exists()  # the registry went to the bucket, not the repo
    pd.testing.assert_frame_equal(pd.read_parquet(local / schema.INTERACTIONS_FILE), pd.read_parquet(remote / schema.INTERACTIONS_FILE))


def test_catalog_images_on_s3_validate_and_a_missing_one_is_named(s3, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv(schema.ALLOWED_URI_PREFIXES_ENV, f"s3://{BUCKET}/images/")  # URLs are refused unless allowed
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    catalog = pd.read_parquet(data / schema.CATALOG_FILE)
    urls = []
    for uri in catalog["image_uri"]:
        key = f"images/{uri}"
        s3.upload_file(str(schema.resolve_uri(str(data), uri)), BUCKET, key)
        urls.append(f"s3://{BUCKET}/{key}")
    catalog["image_uri"] = urls
    catalog.to_parquet(data / schema.CATALOG_FILE, index=False)
    out = tmp_path / "report"
    assert main(["data", "validate", "--data", str(data), "--out", str(out), "--workers", "1", "--no-data-docs"]) == 0

    gone = urls[3]
    s3.delete_object(Bucket=BUCKET, Key=gone.split(f"s3://{BUCKET}/", 1)[1])
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # s3fs caches listings; a new pod would not have them
    assert main(["data", "validate", "--data", str(data), "--out", str(tmp_path / "report2"), "--workers", "1", "--no-data-docs"]) == 2
    report = (tmp_path / "report2" / "validation.json").read_text()
    assert gone in report


def test_the_search_service_fetches_the_champion_a_registry_on_s3_names(s3, tmp_path, capsys):
    """The search Deployment's init container (`vsearch registry fetch`, k8s/base/search.yaml):
    registry and model folder on S3, the copy checked against the recorded content id."""
    import fsspec

    m1 = make_model_dir(tmp_path / "m1", 1)
    (m1 / "tokenizer").mkdir()
    (m1 / "tokenizer" / "tokenizer.json").write_text("{}")
    fs = fsspec.filesystem("s3")
    fs.put(str(m1), f"{BUCKET}/models/m1", recursive=True)
    store = f"s3://{BUCKET}/serving-registry"
    Registry(store).promote(bless(tmp_path, "a", m1), f"s3://{BUCKET}/models/m1")
    out = tmp_path / "mnt" / "champion"
    assert main(["registry", "--store", store, "fetch", "--out", str(out)]) == 0
    assert f"fetched from s3://{BUCKET}/models/m1" in capsys.readouterr().out
    assert model_version(out) == model_version(m1) and (out / "tokenizer" / "tokenizer.json").read_text() == "{}"
    # The object behind the record was replaced: refused, the served copy stays.
    fs.pipe(f"{BUCKET}/models/m1/model.safetensors", (m1 / "model.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    shutil.rmtree(out)
    assert main(["registry", "--store", store, "fetch", "--out", str(out)]) == 2
    assert "weights changed after it was promoted" in capsys.readouterr().err and not out.exists()
