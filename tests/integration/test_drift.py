"""Drift monitor end to end: a reference built for each model, identical windows -> no drift,
a shifted window -> drift on embeddings and features, CLI exit codes, bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from vsearch.artifacts import model_version
from vsearch.config import ConfigError
from vsearch.monitoring import drift as D
from vsearch.monitoring.reference import build_reference, build_snapshot, load_snapshot
from vsearch.monitoring.simulate import shifted_copy
from vsearch.schema import DataError

pytestmark = pytest.mark.integration
SAMPLE = {"max_queries": 300, "max_products": 300}


@pytest.fixture(scope="module")
def windows(tmp_path_factory, tiny_models):
    """A bigger-than-tiny benchmark (144 products, ~580 queries at 32 px), its reference
    snapshot under the tiny 3-tower model, another seed (same distribution) and a shifted copy."""
    from vsearch.data.synth import PRESETS, generate

    root = tmp_path_factory.mktemp("drift")
    cfg = dataclasses.replace(PRESETS["tiny"], name="custom", n_designs=48, colours_per_design=3, mean_queries_per_product=4.0)
    generate(root / "data", cfg, seed=0)
    generate(root / "same", cfg, seed=1)
    shifted_copy(root / "data", root / "shifted")
    model = tiny_models["three_tower"]
    build_snapshot(root / "data", root / "reference", model_dir=model, **SAMPLE)
    return root, model


@pytest.fixture(scope="module")
def references(tmp_path_factory, tiny_models, tiny_data):
    """Each tiny model's drift reference on its training data, as build_drift_reference builds it."""
    root = tmp_path_factory.mktemp("references")
    for name, model in tiny_models.items():
        build_reference(model, tiny_data, root / name, D.load_drift_config().sample,
                        model_uri=f"s3://models/{name}", data_uri="s3://data/tiny")
    return {name: root / name for name in tiny_models}


def test_a_reference_is_built_for_every_trained_model_in_its_own_folder(references, tiny_models, tiny_data):
    for name, model in tiny_models.items():
        meta, queries, products = load_snapshot(references[name])
        # The durable URIs are recorded, not the folders this process read.
        assert meta["model_version"] == model_version(model) and meta["model_dir"] == f"s3://models/{name}"
        assert meta["data"] == "s3://data/tiny" and meta["data_fingerprint"]
        assert meta["queries"] == len(queries) == len(pd.read_parquet(tiny_data / "interactions.parquet"))
        emb = queries.filter(like="emb_").to_numpy()
        assert emb.shape[1] == meta["embed_dim"] and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
        assert set(products["category"]) == set(pd.read_parquet(tiny_data / "catalog.parquet")["category"])
        assert 0 < meta["low_confidence_share"] <= 0.2


def test_identical_windows_no_drift_through_the_cli_with_html(tmp_path, references, tiny_models, tiny_data, capsys):
    from vsearch.cli import main

    out = tmp_path / "drift"
    code = main(["drift", "--reference", str(references["four_tower"]), "--current", str(tiny_data), "--out", str(out),
                 "--model", str(tiny_models["four_tower"])])
    assert code == 0, capsys.readouterr()
    result = json.loads((out / "drift.json").read_text())
    assert result["drift"] is False and result["drifted_checks"] == []
    embedding = {c["name"]: c for c in result["checks"] if c["kind"] == "embedding"}
    assert set(embedding) == {"queries.embeddings", "products.embeddings"}
    assert all(c["score"] <= 0.65 for c in embedding.values())
    health = {c["name"]: c for c in result["checks"] if c["kind"] == "health"}
    assert health["health.mean_top1_similarity"]["score"] == pytest.approx(0.0, abs=1e-6)  # the very same window
    for window in ("queries", "products"):
        # Evidently's embedding-drift widget for this window, showing the score the check decided on.
        html = (out / f"{window}_report.html").read_text()
        score = round(embedding[f"{window}.embeddings"]["score"], 3)
        assert (f'"value": "Drift in embeddings \'{window}\'", '
                f'"label": "Data drift not detected. Drift detection method: model. Drift score: {score}"') in html
    summary = (out / "index.html").read_text()
    assert "No drift" in summary and summary.count('<tr class="ok">') == len(result["checks"])
    assert "no drift" in capsys.readouterr().out


def test_shifted_window_drifts_on_embeddings_and_features(tmp_path, windows):
    root, model = windows
    cfg = D.load_drift_config("drift", [f"sample.max_queries={SAMPLE['max_queries']}", f"sample.max_products={SAMPLE['max_products']}"])
    shifted = D.detect_drift(root / "reference", root / "shifted", tmp_path / "shifted", cfg, model=model, html=False)
    assert shifted["drift"] and shifted["summary"]["embedding"] and shifted["summary"]["feature"]
    drifted = set(shifted["drifted_checks"])
    assert {"queries.embeddings", "products.embeddings"} <= drifted
    assert {"queries.mean_red", "queries.mean_blue", "products.category", "products.title_length"} <= drifted
    assert "queries.query_text_length" not in drifted and "products.image_size" not in drifted  # unchanged features
    # A window from the same generator (another seed): nothing fires.
    same = D.detect_drift(root / "reference", root / "same", tmp_path / "same", cfg, model=model, html=False)
    assert same["drift"] is False, same["drifted_checks"]
    # The decision is Evidently's drift method: the report's EmbeddingsDrift shows the same score.
    assert json.loads((tmp_path / "shifted" / "drift.json").read_text())["drifted_checks"] == shifted["drifted_checks"]


def test_cli_exit_3_on_drift_and_snapshot_subcommand(tmp_path, windows, capsys):
    from vsearch.cli import main

    root, model = windows
    snap = tmp_path / "snap"
    assert main(["drift", "snapshot", "--model", str(model), "--data", str(root / "shifted"), "--out", str(snap)]) == 0
    assert json.loads(capsys.readouterr().out)["model_version"] == model_version(model)
    code = main(["drift", "--reference", str(root / "reference"), "--current", str(snap), "--out", str(tmp_path / "d"), "--no-html"])
    assert code == D.EXIT_DRIFT == 3
    assert "DRIFT:" in capsys.readouterr().out
    assert not list((tmp_path / "d").glob("*.html"))


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, windows, capsys):
    from vsearch.cli import main

    root, model = windows
    assert main(["drift", "--reference", str(tmp_path), "--current", str(root / "same"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "snapshot.json" in err and "not a drift snapshot" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    broken = tmp_path / "broken"
    build_snapshot(root / "same", broken, model_dir=model, max_queries=20, max_products=20)
    queries = pd.read_parquet(broken / "queries.parquet")
    queries.loc[3, "emb_000"] = np.nan
    queries.to_parquet(broken / "queries.parquet", index=False)
    with pytest.raises(DataError, match="row 3: embedding contains NaN"):
        load_snapshot(broken)
    with pytest.raises(ConfigError, match="embeddings.method"):
        D.load_drift_config("drift", ["embeddings.method=tsne"])
    with pytest.raises(DataError, match="no queries in the snapshot window"):
        build_snapshot(root / "same", tmp_path / "empty", model_dir=model, since="2100-01-01")
    assert not (tmp_path / "empty").exists()


def test_a_reference_built_by_another_model_is_refused(tmp_path, references, tiny_models, tiny_data):
    """The monitor imports model and reference by two URIs: a mismatched pair is one error, no report."""
    with pytest.raises(DataError, match="embedded by different models"):
        D.detect_drift(references["image_only"], tiny_data, tmp_path / "out", model=tiny_models["four_tower"], html=False)
    assert not (tmp_path / "out").exists()
