"""Each component's ``python_func`` on the tiny preset, with real artifacts under tmp_path."""

import json
import shutil

import pytest
from kfp.dsl import HTML, Dataset, Markdown, Metrics, Model

from components.evaluate_model import evaluate_model
from components.image import IMAGE
from components.synth_data import synth_data
from components.train_model import train_model
from vsearch.artifacts import model_version
from vsearch.schema import DataError

COMPONENTS = (synth_data, train_model, evaluate_model)


def _artifact(cls, path):
    return cls(name=path.name, uri=str(path), metadata={})


def test_components_run_on_the_project_image_without_installing_anything():
    for component in COMPONENTS:
        container = component.component_spec.implementation.container
        assert container.image == IMAGE
        command = " ".join(container.command)
        assert "pip install" not in command and "kfp==" not in command, component.name
        # Google-style Args: KFP copies each description into the spec the UI shows.
        for name, spec in {**component.component_spec.inputs, **component.component_spec.outputs}.items():
            assert spec.description, f"{component.name}.{name} has no description"


def test_synth_data_writes_the_data_contract(tmp_path):
    data = _artifact(Dataset, tmp_path / "data")
    synth_data.python_func(data=data, preset="tiny", seed=1)
    for manifest in ("catalog.parquet", "interactions.parquet", "reformulations.parquet"):
        assert (tmp_path / "data" / manifest).is_file()
    assert data.metadata["preset"] == "tiny" and data.metadata["seed"] == 1 and data.metadata["products"] > 0


def test_train_model_publishes_a_model_and_logs_its_metrics(tmp_path, tiny_data):
    model = _artifact(Model, tmp_path / "model")
    metrics = _artifact(Metrics, tmp_path / "metrics")
    train_model.python_func(data=_artifact(Dataset, tiny_data), config="tiny_image_only", model=model,
                            metrics=metrics, overrides=["train.max_steps=2"])
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert model.metadata["version"] == model_version(tmp_path / "model")
    assert model.metadata["towers"] == ["query_image", "product_image"]
    assert metrics.metadata["steps"] == 2.0 and metrics.metadata["final_loss"] > 0


def test_train_model_starts_the_4_tower_model_from_the_3_tower_one(tmp_path, tiny_data, tiny_models):
    model = _artifact(Model, tmp_path / "four")
    train_model.python_func(data=_artifact(Dataset, tiny_data), config="tiny_four_tower", model=model,
                            metrics=_artifact(Metrics, tmp_path / "metrics"), overrides=["train.max_steps=1"],
                            init_model=_artifact(Model, tiny_models["three_tower"]))
    summary = json.loads((tmp_path / "four" / "train_summary.json").read_text())
    assert summary["init"] == str(tiny_models["three_tower"])
    assert len(model.metadata["towers"]) == 4 and model.metadata["version"].startswith("4t-")


def test_train_model_stops_on_bad_data_before_writing_a_model(tmp_path, tiny_data):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "catalog.parquet").unlink()
    with pytest.raises(DataError, match="catalog.parquet: manifest file is missing"):
        train_model.python_func(data=_artifact(Dataset, data), config="tiny", model=_artifact(Model, tmp_path / "m"),
                                metrics=_artifact(Metrics, tmp_path / "metrics"))
    assert not (tmp_path / "m").exists()


def test_evaluate_model_writes_the_metrics_contract_report_and_kfp_metrics(tmp_path, tiny_data, tiny_models):
    metrics = _artifact(Metrics, tmp_path / "metrics")
    report = _artifact(HTML, tmp_path / "report.html")
    summary = _artifact(Markdown, tmp_path / "summary.md")
    evaluation = _artifact(Dataset, tmp_path / "evaluation")
    evaluate_model.python_func(
        data=_artifact(Dataset, tiny_data),
        image_only=_artifact(Model, tiny_models["image_only"]),
        three_tower=_artifact(Model, tiny_models["three_tower"]),
        four_tower=_artifact(Model, tiny_models["four_tower"]),
        evaluation=evaluation, metrics=metrics, report=report, summary=summary,
        config="tiny", overrides=["eval.n_boot=50"],
    )
    contract = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert set(contract["models"]) == {"image_only", "three_tower", "four_tower"}
    for name, values in contract["models"].items():
        for key in ("recall@1", "recall@10", "mrr", "cross_category_fp@10", "multimodal_recall@10"):
            assert metrics.metadata[f"{name}.{key}"] == pytest.approx(values[key], abs=1e-6)
    assert (tmp_path / "report.html").read_text() == (tmp_path / "evaluation" / "report.html").read_text()
    table = (tmp_path / "summary.md").read_text().splitlines()
    assert table[0].startswith("| model | recall@1") and [r.split(" | ")[0] for r in table[2:]] == [
        "| image_only", "| three_tower", "| four_tower"]
    assert evaluation.metadata["models"] == ["four_tower", "image_only", "three_tower"]


def test_evaluate_model_with_the_baseline_alone(tmp_path, tiny_data, tiny_models):
    metrics = _artifact(Metrics, tmp_path / "metrics")
    evaluate_model.python_func(
        data=_artifact(Dataset, tiny_data), image_only=_artifact(Model, tiny_models["image_only"]),
        evaluation=_artifact(Dataset, tmp_path / "evaluation"), metrics=metrics,
        report=_artifact(HTML, tmp_path / "r.html"), summary=_artifact(Markdown, tmp_path / "s.md"),
        config="tiny", overrides=["eval.n_boot=20"],
    )
    assert {k.split(".")[0] for k in metrics.metadata} == {"image_only"}
