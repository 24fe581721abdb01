"""The compiled training, monitoring and backfill pipelines run under kfp.local on the tiny preset.

kfp.local can skip a dsl.If branch and still report SUCCESS (NOTES.md), so each run names
the branch tasks it must execute (``expect``), and the test checks the other branch did
not run and that the artifacts of the branch that ran are really there.
"""

import json
from pathlib import Path

import pytest
import yaml

from pipelines.local import TINY_PARAMS, run_local
from pipelines.config import load_pipeline_config

# Tiny models trained a few steps: a gate for the plumbing (no significance asked of them).
LENIENT = {"baseline": "image_only", "n_boot": 100, "checks": [{"metric": "recall@10", "against": "value", "min": 0.0}],
           "without_champion": []}
NO_CHECKS = {"baseline": "image_only", "n_boot": 100, "checks": []}
BLESSED_BRANCH = {"backfill-embeddings", "backfill-embeddings-2", "write-rollout-config"}
REJECTED_BRANCH = {"record-rejection"}


def _uri(manifest, task, output):
    return Path(manifest["tasks"][task]["outputs"][output][0]["uri"])


def _gate(tmp_path, name, raw):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


# The whole demo pipeline: 30-160 s on 2 idle-to-busy cores, past the 300 s default hang guard
# when the machine is shared with training jobs.
@pytest.mark.timeout(900)
@pytest.mark.slow
@pytest.mark.integration
def test_pipeline_demo_takes_the_branch_the_gate_decides_and_keeps_every_artifact(tmp_path):
    """make demo's driver (pipelines.demo) on the tiny preset: training + monitoring pipelines."""
    from pipelines.demo import run_pipeline_demo
    from pipelines.compiler import PIPELINES
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import connect
    from vsearch.rollout.schema import load_rollout

    out = tmp_path / "demo"
    # Blessed: the candidate is indexed under its candidate alias and the release waits in review.
    params = {k: v for k, v in TINY_PARAMS["training"].items() if k != "preset"}
    summary = run_pipeline_demo(out, "tiny", 0, params={**params, "gate_config": _gate(tmp_path, "lenient", LENIENT)})
    manifest = json.loads((Path(summary["run_dir"]) / "run.json").read_text())
    ran = set(manifest["tasks"])
    assert BLESSED_BRANCH <= ran and not REJECTED_BRANCH & ran
    assert manifest["tasks"]["gate-model"]["parameters"]["Output"] is True
    blessing = json.loads((out / "blessing.json").read_text())
    assert blessing["blessed"] is True and summary["blessed"] is True
    assert blessing == json.loads((_uri(manifest, "gate-model", "blessing") / "blessing.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())  # the Foundation contract
    assert set(metrics["models"]) == {"image_only", "three_tower", "four_tower"} and "eval" in metrics
    assert (out / "report.html").read_text().lstrip().startswith("<") and (out / "gate.html").is_file()
    validation = json.loads((_uri(manifest, "validate-data", "validation") / "validation.json").read_text())
    assert validation["success"] is True
    train_data = _uri(manifest, "build-training-set", "training_set")
    model = _uri(manifest, "train-model-3", "model")
    assert json.loads((model / "train_summary.json").read_text())["data"] == str(train_data.resolve())
    # The drift reference is its own step's artifact, built by that model on its training data.
    reference = json.loads((_uri(manifest, "build-drift-reference-3", "reference") / "snapshot.json").read_text())
    assert (reference["model_dir"], reference["data"]) == (str(model.resolve()), str(train_data.resolve()))

    collection = manifest["tasks"]["backfill-embeddings"]["parameters"]["Output"]
    assert summary["milvus"] == {"uri": str(out / "milvus.db"), "alias": "vsearch_serving_candidate", "collection": collection,
                                 "live_alias": "vsearch_serving"}
    rollout = load_rollout(out / "rollout.yaml")
    with connect(str(out / "milvus.db"), load_index_config()) as store:
        assert store.alias_target("vsearch_serving") is None  # issue 19: nothing is live before review
        assert store.alias_target("vsearch_serving_candidate") == collection
        assert store.collection_record(collection)["status"] == "verified"
        assert store.count(collection) == json.loads((_uri(manifest, "backfill-embeddings", "index") / "backfill.json").read_text())["catalog_rows"] > 0
        for arm in (rollout.control, rollout.treatment):  # every alias of the plan exists, built by its arm's model
            assert store.collection_record(store.alias_target(arm.milvus_alias))["model_version"] == arm.model.version
    assert rollout.treatment.milvus_collection == collection
    assert rollout.treatment.model.version == blessing["candidate"]["version"]
    assert rollout.treatment.model.drift_reference == str(_uri(manifest, "build-drift-reference-3", "reference").resolve())
    assert json.loads((out / "pipeline_demo.json").read_text())["release"]["status"] == "in_review"
    assert (out / "inferenceservice.yaml").is_file() and not (out / "rejection.md").exists()
    assert sorted(p.stem for p in (out / "pipelines").glob("*.yaml")) == sorted(PIPELINES)
    # Monitoring: the 4-tower model's reference vs a shifted window -> retraining is due.
    assert summary["monitoring"]["retraining_due"] is True
    assert json.loads((out / "drift" / "drift.json").read_text())["drift"] is True and (out / "drift" / "index.html").is_file()


# The rejected branch run end to end: no other test gets that far (test_failure_path_local.py
# stops before training; tests/integration's imported-catalog run does not assert a branch).
# Its own test (it was the tail of the demo test's 219 s at load): 60-90 s of task start-ups.
@pytest.mark.timeout(900)
@pytest.mark.slow
@pytest.mark.integration
def test_a_rejected_candidate_through_the_import_pipeline_indexes_nothing_and_says_why(tmp_path, tiny_data):
    """Not blessed (no thresholds: fails closed), on the tiny preset's data (what the demo's
    synth-data step makes) through the import entry point: nothing is indexed or rolled out,
    and the run says why."""
    cfg = load_pipeline_config(None, ["retry.num_retries=0"])
    params = {**TINY_PARAMS["training-import"], "data_uri": str(tiny_data),
              "gate_config": _gate(tmp_path, "none", NO_CHECKS), "milvus_uri": str(tmp_path / "unused.db")}
    files = sorted(p.relative_to(tiny_data) for p in tiny_data.rglob("*"))
    rejected = run_local("training-import", cfg, tmp_path / "runs-rejected", params, expect=sorted(REJECTED_BRANCH))
    assert sorted(p.relative_to(tiny_data) for p in tiny_data.rglob("*")) == files  # the session's data stays as it was
    ran = set(rejected["tasks"])
    assert REJECTED_BRANCH <= ran and not BLESSED_BRANCH & ran
    assert rejected["tasks"]["gate-model"]["parameters"]["Output"] is False
    why = _uri(rejected, "record-rejection", "rejection").read_text()
    assert why.startswith("# Not blessed: four_tower") and "serving alias is untouched" in why
    assert not (tmp_path / "unused.db").exists()


@pytest.mark.timeout(900)  # a whole pipeline run, like the two above
@pytest.mark.slow
@pytest.mark.integration
def test_backfill_pipeline_runs_every_shard_then_swaps_the_alias(tmp_path, tiny_data, tiny_models):
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import connect

    cfg = load_pipeline_config(None, ["retry.num_retries=0"])
    params = {**TINY_PARAMS["backfill"], "num_shards": 3, "model_uri": str(tiny_models["four_tower"]),
              "data_uri": str(tiny_data)}
    manifest = run_local("backfill", cfg, tmp_path / "runs", params, expect=["embed-shard"])
    shards = sorted(t for t in manifest["tasks"] if t.endswith("/embed-shard"))
    assert len(shards) == 3  # one task per shard, each with its own output
    rows = sum(manifest["tasks"][t]["outputs"]["metrics"][0]["metadata"]["rows"] for t in shards)
    index = _uri(manifest, "index-embeddings", "index")
    report = json.loads((index / "backfill.json").read_text())
    assert rows == report["catalog_rows"] == report["written"] and report["shards"] == 3
    assert manifest["outputs"]["Output"] == report["collection"]
    with connect(str(index / "milvus.db"), load_index_config()) as store:
        assert store.alias_target("vsearch_serving") == report["collection"]
