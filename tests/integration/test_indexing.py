"""Backfill into Milvus Lite for real: verify, alias swap, rollback, gc, failed verifications, NaN."""

from __future__ import annotations

import json
import shutil

import pytest

from vsearch.artifacts import model_version
from vsearch.cli import main as cli
from vsearch.indexing.config import load_index_config
from vsearch.indexing.store import collection_name, connect, hit_id

pytestmark = pytest.mark.integration


def _store(uri):
    return connect(str(uri), load_index_config())


def _alias(uri, alias="live"):
    with _store(uri) as s:
        return s.alias_target(alias)


def _backfill(model, data, uri, *extra, alias="live"):
    argv = ["index", "backfill", "--model", str(model), "--data", str(data), "--milvus-uri", str(uri)]
    argv += ["--alias", alias] if alias else []
    return cli(argv + ["--set", "backfill.num_workers=0", *extra])


def _coll(model):
    return collection_name("vsearch", model_version(model))


def test_backfill_alias_swap_rollback_gc(tmp_path, tiny_data, tiny_models, capsys):
    uri = tmp_path / "milvus.db"
    three, image_only = tiny_models["three_tower"], tiny_models["image_only"]
    assert _backfill(three, tiny_data, uri) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("\n{") + 1 :])
    assert report["written"] == 32 and report["verify"]["ok"] and report["index_type"] == "HNSW"
    assert report["verify"]["recall"] >= 0.95
    assert _alias(uri) == _coll(three)

    # A rerun stores nothing new (idempotent, resumable) and leaves the alias where it is.
    assert _backfill(three, tiny_data, uri) == 0
    out = capsys.readouterr().out
    assert "32 already stored, 0 to embed" in out and _alias(uri) == _coll(three)

    assert _backfill(image_only, tiny_data, uri) == 0
    capsys.readouterr()
    assert _alias(uri) == _coll(image_only)
    with _store(uri) as s:
        # Search through the alias follows the swap: the image-only collection answers.
        for name in (_coll(image_only), _coll(three)):
            s.ensure_loaded(name)
        pid = sorted(s.existing_ids(_coll(image_only)))[5]
        (v,) = s.fetch_vectors(_coll(image_only), [pid]).values()
        hits = s.search("live", [v], 3, load_index_config().search, "IP")
        assert hit_id(hits[0][0]) == pid
        assert s.count(_coll(image_only)) == s.count(_coll(three)) == 32

    assert cli(["index", "rollback", "--alias", "live", "--milvus-uri", str(uri)]) == 0
    assert _alias(uri) == _coll(three)
    # Nothing earlier than the first collection: rollback refuses and the alias stays.
    assert cli(["index", "rollback", "--alias", "live", "--milvus-uri", str(uri)]) == 1
    assert "no earlier verified collection" in capsys.readouterr().err
    assert _alias(uri) == _coll(three)

    assert cli(["index", "gc", "--keep", "0", "--milvus-uri", str(uri)]) == 0
    gc = json.loads(capsys.readouterr().out)
    assert gc["dropped"] == [_coll(image_only)] and gc["kept"] == [_coll(three)]
    assert cli(["index", "status", "--milvus-uri", str(uri)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert list(status["collections"]) == [_coll(three)]
    assert status["collections"][_coll(three)]["status"] == "verified"
    assert status["aliases"]["live"]["collection"] == _coll(three)


@pytest.fixture
def live_on_three_tower(tmp_path, tiny_data, tiny_models, capsys):
    uri = tmp_path / "milvus.db"
    assert _backfill(tiny_models["three_tower"], tiny_data, uri) == 0
    capsys.readouterr()
    return uri


def test_too_low_recall_leaves_alias(live_on_three_tower, tiny_data, tiny_models, capsys):
    uri = live_on_three_tower
    code = _backfill(tiny_models["image_only"], tiny_data, uri, "--set", "verify.min_recall=1.01")
    assert code == 1
    err = capsys.readouterr().err
    assert "failed verification" in err and "below threshold 1.0100" in err and "left unchanged" in err
    assert _alias(uri) == _coll(tiny_models["three_tower"])
    with _store(uri) as s:
        assert s.collection_record(_coll(tiny_models["image_only"]))["status"] == "failed"


def test_missing_rows_leave_alias(live_on_three_tower, tiny_data, tiny_models, capsys):
    uri, model = live_on_three_tower, tiny_models["image_only"]
    assert _backfill(model, tiny_data, uri, alias=None) == 0  # built and verified, not promoted
    with _store(uri) as s:
        s.ensure_loaded(_coll(model))
        s.client.delete(_coll(model), ids=sorted(s.existing_ids(_coll(model)))[:3])
        s.client.flush(_coll(model))
    capsys.readouterr()
    assert _backfill(model, tiny_data, uri, "--verify-only") == 1
    err = capsys.readouterr().err
    assert "row count 29 != catalog rows 32" in err and "3 catalog product(s) missing" in err
    assert _alias(uri) == _coll(tiny_models["three_tower"])


def test_wrong_dimension_leaves_alias(live_on_three_tower, tiny_data, tiny_models, capsys):
    uri, model = live_on_three_tower, tiny_models["image_only"]
    with _store(uri) as s:  # a collection of the same name but another dimension already exists
        s.create_collection(_coll(model), dim=8)
    assert _backfill(model, tiny_data, uri) == 1
    err = capsys.readouterr().err
    assert "wrong dimension: collection has 8, model embeds 32" in err
    assert _alias(uri) == _coll(tiny_models["three_tower"])


def test_nan_embedding_refused_with_row(tmp_path, tiny_data, tiny_models, capsys):
    from safetensors.torch import load_file, save_file

    model = tmp_path / "nan_model"
    shutil.copytree(tiny_models["image_only"], model)
    weights = load_file(model / "model.safetensors")
    key = next(k for k in weights if k.startswith("image_encoder.") and k.endswith("weight") and weights[k].ndim == 2)
    weights[key][0, 0] = float("nan")
    save_file(weights, model / "model.safetensors")
    uri = tmp_path / "milvus.db"
    assert _backfill(model, tiny_data, uri) == 2
    err = capsys.readouterr().err
    assert "catalog.parquet, row 0: embedding is NaN/inf" in err
    assert _alias(uri) is None


def test_served_collection_is_never_rewritten(live_on_three_tower, tiny_data, tiny_models, tmp_path, capsys):
    """The catalog changed: the served collection is refused for rewriting; --tag builds a new one."""
    import pandas as pd

    uri, model = live_on_three_tower, tiny_models["three_tower"]
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    catalog = pd.read_parquet(data / "catalog.parquet")
    catalog.iloc[1:].to_parquet(data / "catalog.parquet", index=False)  # one product removed
    assert _backfill(model, data, uri) == 1
    assert "is served by alias(es) ['live'] and the catalog changed" in capsys.readouterr().err
    with _store(uri) as s:
        s.ensure_loaded(_coll(model))
        assert s.count(_coll(model)) == 32  # untouched
    assert _backfill(model, data, uri, "--tag", "c2") == 0
    capsys.readouterr()
    assert _alias(uri) == _coll(model) + "_c2"
    with _store(uri) as s:
        assert s.count(_coll(model) + "_c2") == 31
