"""The training / monitoring / backfill components' ``python_func`` on the tiny preset, with
real artifacts under tmp_path and the real stages (GX, Feast local, Milvus Lite, Evidently)."""

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Model

from components.backfill_embeddings import backfill_embeddings
from components.build_drift_reference import build_drift_reference
from components.build_training_set import build_training_set
from components.detect_drift import detect_drift
from components.gate_model import gate_model
from components.image import IMAGE
from components.materialize_features import materialize_features
from components.notify_run import notify_run
from components.record_rejection import record_rejection
from components.validate_data import validate_data
from components.write_rollout_config import write_rollout_config
from vsearch.artifacts import model_version
from vsearch.schema import DataError

COMPONENTS = (validate_data, build_training_set, gate_model, record_rejection, write_rollout_config, detect_drift,
              backfill_embeddings, materialize_features, notify_run)
# A gate that blesses any model that finds something, and one with no thresholds (fails closed).
# Tiny models trained a few steps: a gate for the plumbing (no significance asked of them).
LENIENT = {"baseline": "image_only", "n_boot": 100, "checks": [{"metric": "recall@10", "against": "value", "min": 0.0}],
           "without_champion": []}
NO_CHECKS = {"baseline": "image_only", "n_boot": 100, "checks": []}


def _artifact(cls, path, metadata=None):
    return cls(name=path.name, uri=str(path), metadata=dict(metadata or {}))


def _gate_file(tmp_path, name, raw):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, tiny_data, tiny_models):
    from vsearch.config import EvalConfig
    from vsearch.evaluation.evaluate import evaluate

    out = tmp_path_factory.mktemp("stage_eval") / "evaluation"
    evaluate({k: tiny_models[k] for k in ("image_only", "three_tower", "four_tower")}, tiny_data, out,
             EvalConfig(n_boot=50, n_examples=2))
    return out


def _gate(tmp_path, evaluation, config, registry=""):
    blessing = _artifact(Artifact, tmp_path / "blessing")
    outputs = dict(blessing=blessing, report=_artifact(HTML, tmp_path / "gate.html"),
                   summary=_artifact(Markdown, tmp_path / "gate.md"), metrics=_artifact(Metrics, tmp_path / "gate_metrics"))
    blessed = gate_model.python_func(evaluation=_artifact(Dataset, evaluation), candidate="four_tower", config=config,
                                     registry=registry, **outputs)
    return blessed, outputs


def test_stage_components_run_on_the_project_image_and_document_every_io():
    for component in COMPONENTS:
        container = component.component_spec.implementation.container
        assert container.image == IMAGE
        assert "pip install" not in " ".join(container.command), component.name
        for name, spec in {**component.component_spec.inputs, **component.component_spec.outputs}.items():
            assert spec.description, f"{component.name}.{name} has no description"
    # The branch decisions are single return values (kfp.local skips dsl.If on NamedTuple fields).
    for component in (gate_model, detect_drift):
        assert component.component_spec.outputs["Output"].type == "Boolean"


def test_validate_data_passes_the_tiny_preset_and_logs_metrics(tmp_path, tiny_data):
    validation, report, metrics = (_artifact(Dataset, tmp_path / "v"), _artifact(HTML, tmp_path / "v.html"),
                                   _artifact(Metrics, tmp_path / "m"))
    validate_data.python_func(data=_artifact(Dataset, tiny_data), validation=validation, report=report, metrics=metrics)
    result = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert result["success"] is True and validation.metadata == {"success": True, "failed": 0}
    assert metrics.metadata["failed"] == 0.0 and metrics.metadata["checks"] == float(len(result["checks"]))
    assert metrics.metadata["rows.catalog"] == float(len(pd.read_parquet(tiny_data / "catalog.parquet")))
    assert (tmp_path / "v.html").read_text() == (tmp_path / "v" / "validation.html").read_text()


def test_validate_data_publishes_the_report_of_bad_data_and_the_next_step_stops_the_run(tmp_path, tiny_data):
    """KFP publishes no outputs of a failed task: validation succeeds with its verdict and report,
    and build_training_set (the next step) stops the run naming file, rule and row."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    catalog = pd.read_parquet(data / "catalog.parquet")
    catalog.loc[3, "product_id"] = catalog.loc[2, "product_id"]  # a duplicate id at row 3
    catalog.to_parquet(data / "catalog.parquet", index=False)
    validation, report = _artifact(Dataset, tmp_path / "v"), _artifact(HTML, tmp_path / "v.html")
    validate_data.python_func(data=_artifact(Dataset, data), validation=validation, report=report,
                              metrics=_artifact(Metrics, tmp_path / "m"))
    result = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert result["success"] is False and any("product_id" in line for line in result["failed"])
    assert validation.metadata == {"success": False, "failed": len(result["failed"])}
    assert "product_id" in (tmp_path / "v.html").read_text() and "FAIL" in (tmp_path / "v.html").read_text()
    out = tmp_path / "ts"
    with pytest.raises(DataError, match=r"catalog\.parquet, row \d+: .*no passing validation: \d+ check\(s\) failed") as err:
        build_training_set.python_func(data=_artifact(Dataset, data), validation=validation,
                                       training_set=_artifact(Dataset, out), metrics=_artifact(Metrics, tmp_path / "m2"))
    assert err.value.row in (2, 3) and not out.exists()


def test_build_training_set_refuses_unvalidated_data_then_builds_point_in_time(tmp_path, tiny_data):
    validation = tmp_path / "validation"
    validation.mkdir()
    (validation / "validation.json").write_text(json.dumps({"success": False}))
    out = _artifact(Dataset, tmp_path / "ts")
    with pytest.raises(DataError, match="no passing validation"):
        build_training_set.python_func(data=_artifact(Dataset, tiny_data), validation=_artifact(Dataset, validation),
                                       training_set=out, metrics=_artifact(Metrics, tmp_path / "m"))
    assert not (tmp_path / "ts").exists()
    (validation / "validation.json").write_text(json.dumps({"success": True}))
    metrics = _artifact(Metrics, tmp_path / "m")
    build_training_set.python_func(data=_artifact(Dataset, tiny_data), validation=_artifact(Dataset, validation),
                                   training_set=out, metrics=metrics)
    interactions = pd.read_parquet(tmp_path / "ts" / "interactions.parquet")
    assert "title" in interactions.columns and interactions["title"].notna().all()
    assert metrics.metadata["rows"] == float(len(interactions)) == float(out.metadata["rows"])
    assert (tmp_path / "ts" / "training_set.json").is_file()


def test_gate_model_blesses_or_rejects_and_record_rejection_says_why(tmp_path, evaluation, tiny_models):
    blessed, out = _gate(tmp_path / "yes", evaluation, _gate_file(tmp_path, "lenient", LENIENT))
    assert blessed is True
    saved = json.loads((tmp_path / "yes" / "blessing" / "blessing.json").read_text())
    assert saved["blessed"] is True and saved["candidate"]["version"] == model_version(tiny_models["four_tower"])
    assert out["blessing"].metadata["blessed"] is True and out["metrics"].metadata["blessed"] == 1.0
    assert "BLESSED" in (tmp_path / "yes" / "gate.md").read_text()
    with pytest.raises(DataError, match="blessed candidate"):
        record_rejection.python_func(blessing=out["blessing"], rejection=_artifact(Markdown, tmp_path / "r.md"))

    blessed, out = _gate(tmp_path / "no", evaluation, _gate_file(tmp_path, "none", NO_CHECKS))
    assert blessed is False and out["metrics"].metadata["blessed"] == 0.0
    rejection = _artifact(Markdown, tmp_path / "why.md")
    reason = record_rejection.python_func(blessing=out["blessing"], rejection=rejection)
    assert reason == json.loads((tmp_path / "no" / "blessing" / "blessing.json").read_text())["reason"]
    text = (tmp_path / "why.md").read_text()
    assert text.startswith("# Not blessed: four_tower") and "fails closed" in text and reason in text


def test_backfill_then_rollout_config_for_a_blessed_model(tmp_path, evaluation, tiny_data, tiny_models):
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import connect
    from vsearch.rollout.schema import load_rollout

    from vsearch.release.lifecycle import Release

    _, gate = _gate(tmp_path / "gate", evaluation, _gate_file(tmp_path, "lenient", LENIENT))
    milvus = str(tmp_path / "milvus.db")
    overrides = ["verify.sample_size=30", "backfill.num_workers=0"]
    index, metrics = _artifact(Artifact, tmp_path / "index"), _artifact(Metrics, tmp_path / "im")
    collection = backfill_embeddings.python_func(
        model=_artifact(Model, tiny_models["four_tower"]), data=_artifact(Dataset, tiny_data), index=index,
        metrics=metrics, milvus_uri=milvus, alias="vsearch_serving", alias_role="candidate", overrides=overrides)
    version = model_version(tiny_models["four_tower"])
    assert collection.endswith(version.replace("-", "_")) and index.metadata["collection"] == collection
    n_products = len(pd.read_parquet(tiny_data / "catalog.parquet"))
    assert metrics.metadata["rows"] == metrics.metadata["written"] == float(n_products)
    assert metrics.metadata["recall_at_k"] >= 0.95
    # The first deployment's control: the baseline, indexed because the blessing has no champion.
    control_index = _artifact(Artifact, tmp_path / "control")
    baseline = backfill_embeddings.python_func(
        model=_artifact(Model, tiny_models["image_only"]), data=_artifact(Dataset, tiny_data), index=control_index,
        metrics=_artifact(Metrics, tmp_path / "cm"), milvus_uri=milvus, alias="vsearch_serving", alias_role="baseline",
        overrides=overrides, unless_champion=gate["blessing"])
    with connect(milvus, load_index_config()) as store:
        assert store.alias_target("vsearch_serving") is None  # the live alias is never touched by the pipeline
        assert store.alias_target("vsearch_serving_candidate") == collection
        assert store.alias_target("vsearch_serving_baseline") == baseline
        assert store.count(collection) == n_products

    rollout, summary = _artifact(Artifact, tmp_path / "rollout"), _artifact(Markdown, tmp_path / "rollout.md")
    write_rollout_config.python_func(blessing=gate["blessing"], index=index, rollout=rollout, summary=summary,
                                     control_model=_artifact(Model, tiny_models["image_only"]), control_index=control_index,
                                     registry=str(tmp_path / "registry"), milvus_uri=milvus)
    config = load_rollout(tmp_path / "rollout" / "rollout.yaml")
    assert config.treatment.model.version == version
    assert config.control.model.version == model_version(tiny_models["image_only"])
    assert config.treatment.milvus_collection == collection  # the collection the backfill verified
    assert config.control.milvus_collection == baseline
    assert (tmp_path / "rollout" / "inferenceservice.yaml").is_file()
    assert collection in (tmp_path / "rollout.md").read_text() and "in review" in (tmp_path / "rollout.md").read_text()
    assert Release(tmp_path / "rollout" / "rollout.yaml").state().status == "in_review"


def test_write_rollout_config_refuses_an_unblessed_candidate(tmp_path, evaluation, tiny_models):
    _, gate = _gate(tmp_path / "gate", evaluation, _gate_file(tmp_path, "none", NO_CHECKS))
    index = _artifact(Artifact, tmp_path / "index", {"collection": "c", "alias": "a"})
    with pytest.raises(DataError, match="not blessed"):
        write_rollout_config.python_func(blessing=gate["blessing"], index=index, rollout=_artifact(Artifact, tmp_path / "r"),
                                         summary=_artifact(Markdown, tmp_path / "r.md"),
                                         control_model=_artifact(Model, tiny_models["image_only"]))
    assert not (tmp_path / "r").exists()


def test_detect_drift_says_whether_retraining_is_due(tmp_path, tiny_data, tiny_models):
    from vsearch.monitoring.simulate import shifted_copy

    shifted = tmp_path / "shifted"
    shifted_copy(tiny_data, shifted)
    overrides = ["sample.max_queries=100", "sample.max_products=100", "embeddings.plot_sample=20"]
    model = _artifact(Model, tiny_models["four_tower"])
    # The model's reference: its own step's output, built on the data it was trained on.
    reference = _artifact(Dataset, tmp_path / "reference")
    build_drift_reference.python_func(model=model, data=_artifact(Dataset, tiny_data), reference=reference, overrides=overrides)
    assert reference.metadata["model_version"] == model_version(tiny_models["four_tower"])
    assert 0 < reference.metadata["queries"] <= 100 and (tmp_path / "reference" / "snapshot.json").is_file()
    results = {}
    for label, window in (("same", tiny_data), ("shifted", shifted)):
        # (The report once went into the window's own folder: issue 20's --out-over-input, now refused.)
        drift_report, metrics = _artifact(Artifact, tmp_path / f"{label}-report"), _artifact(Metrics, tmp_path / f"{label}.m")
        pages = {name: _artifact(HTML, tmp_path / f"{label}.{name}.html") for name in ("report", "queries_report", "products_report")}
        results[label] = detect_drift.python_func(
            model=model, reference=reference, current=_artifact(Dataset, window), drift_report=drift_report,
            metrics=metrics, overrides=overrides, **pages)
        saved = json.loads((tmp_path / f"{label}-report" / "drift.json").read_text())
        assert saved["drift"] is results[label] and metrics.metadata["drift"] == float(results[label])
        # Each page is its own HTML output and stands alone: the KFP UI follows no relative link.
        for name, page in pages.items():
            text = Path(page.path).read_text()
            assert text.lstrip().startswith("<"), name
            relative = [u for u in re.findall(r'(?:href|src)\s*=\s*["\']([^"\']*)', text)
                        if not u.startswith(("#", "data:", "http://", "https://", "javascript:"))]
            assert relative == [], (name, relative[:5])
        for side in ("queries", "products"):
            assert Path(pages[f"{side}_report"].path).read_bytes() == (tmp_path / f"{label}-report" / f"{side}_report.html").read_bytes()
            assert "embeddings" in Path(pages[f"{side}_report"].path).read_text()
        assert "products_report output" in Path(pages["report"].path).read_text()
    assert results == {"same": False, "shifted": True}
