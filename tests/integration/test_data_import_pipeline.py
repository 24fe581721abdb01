"""A catalog imported with `vsearch data import` from CSV + an image folder validates, trains
(image-only, 3-tower, 4-tower from 3-tower with mined rows from the user's own variant-group
column), evaluates and indexes through the library functions the demo and the pipeline's
components call. (Named *_pipeline: tests/unit/test_data_import.py holds the same basename.)"""

from __future__ import annotations

import json
import shlex

import pytest
from helpers.import_source import write_catalog_source

from vsearch import model_folder
from vsearch.cli import main as vsearch
from vsearch.config import load_config
from vsearch.evaluation.evaluate import evaluate
from vsearch.indexing.backfill import backfill
from vsearch.indexing.config import load_index_config
from vsearch.indexing.store import connect
from vsearch.training.loop import train
from vsearch.validation.validate import validate_dataset

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_an_imported_catalog_validates_trains_evaluates_and_indexes(tmp_path):
    source = write_catalog_source(tmp_path / "src", n_designs=8)
    data = tmp_path / "data"
    assert vsearch(["data", "import", "--images", str(source["images"]), "--catalog", str(source["catalog"]),
                    "--engagement", str(source["engagement"]), "--out", str(data), "--variant-group", "parent"]) == 0
    result = validate_dataset(data)
    assert result.success, [c.line() for c in result.failures]

    models = {}
    for name, preset, init, extra in (
        ("image_only", "tiny_image_only", None, []),
        ("three_tower", "tiny", None, []),
        ("four_tower", "tiny_four_tower", "three_tower", ["data.mine_reformulations=1", "data.reformulation_group=parent"]),
    ):
        models[name] = tmp_path / "models" / name
        train(load_config(preset, ["train.max_steps=3", *extra]), data, models[name],
              init=models[init] if init else None, progress=False)
    rows = {n: json.loads((p / model_folder.SUMMARY_FILE).read_text())["train_rows"] for n, p in models.items()}
    assert rows["four_tower"] > rows["three_tower"] > 0  # rows mined from the user's own 'parent' column

    metrics = evaluate({n: str(p) for n, p in models.items()}, data, tmp_path / "eval", load_config("tiny").eval)
    assert set(metrics["models"]) == set(models) and metrics["eval"]["queries"] > 0
    assert (tmp_path / "eval" / "report.html").is_file()

    cfg = load_index_config()
    with connect(str(tmp_path / "milvus.db"), cfg) as store:
        report = backfill(models["four_tower"], data, store, "imported_serving", cfg)
    assert report.written == report.catalog_rows == 24 and report.alias_moved


@pytest.mark.timeout(900)
def test_an_imported_catalog_runs_through_the_training_pipeline_locally(tmp_path, capsys):
    """The pipeline command the import prints (its import variant, ``data_uri``, the variant
    group in ``train_overrides``), under kfp.local with the tiny configs: validate, Feast
    training set, three models (the 4-tower mining rows from the user's 'parent' column),
    evaluate, gate (53 s measured at 2 cores)."""
    source = write_catalog_source(tmp_path / "src", n_designs=8)
    data = tmp_path / "data"
    assert vsearch(["data", "import", "--images", str(source["images"]), "--catalog", str(source["catalog"]),
                    "--engagement", str(source["engagement"]), "--out", str(data), "--variant-group", "parent"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if "run-local training-import" in ln]
    printed = shlex.split(line.split("pipeline: ", 1)[1])
    params = dict(printed[i + 1].split("=", 1) for i, word in enumerate(printed) if word == "--param")
    # a given train_overrides replaces --tiny's: keep its step cap. The tiny 4-tower preset does
    # not mine rows (four_tower.yaml does: data.mine_reformulations: 1): turn it on here (it
    # reaches all three models; the baselines mining too does not matter to this smoke run)
    overrides = [*json.loads(params.pop("train_overrides")), "train.max_steps=3", "data.mine_reformulations=1"]
    runs = tmp_path / "runs"
    assert vsearch(["pipeline", "run-local", "training-import", "--tiny", "--out", str(runs), "--param", f"data_uri={params.pop('data_uri')}",
                    "--param", f"train_overrides={json.dumps(overrides)}"]) == 0 and not params
    (metrics_path,) = runs.glob("*/evaluate-model/evaluation/metrics.json")
    metrics = json.loads(metrics_path.read_text())
    assert set(metrics["models"]) == {"image_only", "three_tower", "four_tower"} and metrics["eval"]["queries"] > 0
    summaries = [json.loads(p.read_text()) for p in runs.glob("*/**/train_summary.json")]
    fours = [s["mined_reformulations"] for s in summaries if s["name"] == "tiny_four_tower"]
    assert fours and all(mined["rows"] > 0 for mined in fours), fours
