"""Path is not URI: every component run the way a cluster pod runs it.

On a cluster KFP's launcher gives a component artifacts whose ``uri`` is the durable object
(``s3://bucket/...``; ``minio://`` on a default install) and whose ``path`` is where one pod
sees it (``/s3/bucket/...``, ``/minio/...``): inputs downloaded, outputs uploaded after the
step, the pod then gone. Here each step is such a pod: a fresh local folder, inputs fetched
from an S3 API on loopback (moto: the ``s3`` fixture of tests/conftest.py), outputs
uploaded, the folder deleted. Every durable record (blessing, registry, release log,
rollout.yaml, KServe manifests, reports, model files, index records, artifact metadata,
return values) must name the s3:// URIs, never a folder of one pod.

One tiny pipeline run per module: tiny data, two models trained two steps, a Milvus Lite
database standing in for the Milvus server (outside every pod), and two steps that keep a Lite
database inside their output (no Milvus URI, as local runs do). Every component in
components/ must be run here (a test says which one is not).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Model

# The module's pipeline runs in the first test's setup: 27 s idle, 110 s measured at load 3.5
# (imports of Evidently, Feast and GX, 40 artifact downloads from moto): past the 300 s default
# guard on a busier machine.
# A whole pod-by-pod pipeline run against loopback S3 (about 40-110 s): integration tier, not the fast one.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ARTIFACT_TYPES = {cls.schema_title: cls for cls in (Artifact, Dataset, HTML, Markdown, Metrics, Model)}

BUCKET = "vsearch-test"
ROOT = f"s3://{BUCKET}/pipeline-root"
TRAIN = ["train.max_steps=2", "train.warmup_steps=1"]
INDEX = ["verify.sample_size=20", "backfill.num_workers=0", "backfill.batch_size=8"]
DRIFT = ["sample.max_queries=100", "sample.max_products=100", "embeddings.plot_sample=20"]
GATES = {"lenient": {"baseline": "image_only", "n_boot": 100, "without_champion": [],
                     "checks": [{"metric": "recall@10", "against": "value", "min": 0.0}]},
         "none": {"baseline": "image_only", "n_boot": 100, "checks": []}}


class Cluster:
    """Runs a component's ``python_func`` as a KFP pod: artifacts with an s3:// ``uri`` and a
    pod-local ``path``; metadata kept per URI, as ML Metadata keeps it."""

    def __init__(self, fs, pods: Path):
        self.fs, self.pods, self.metadata, self.returns, self.ran = fs, pods, {}, {}, set()

    def _local(self, pod: Path, uri: str) -> Path:
        return pod / "s3" / uri.removeprefix("s3://")

    def _bring(self, pod: Path, artifact):
        copy = type(artifact)(name=artifact.name, uri=artifact.uri, metadata=dict(self.metadata.get(artifact.uri, {})))
        local = self._local(pod, artifact.uri)
        local.parent.mkdir(parents=True, exist_ok=True)
        if self.fs.isdir(artifact.uri):
            self.fs.get(artifact.uri.rstrip("/") + "/", str(local) + "/", recursive=True)
        else:
            self.fs.get_file(artifact.uri, str(local))
        copy.custom_path = str(local)
        return copy

    def run(self, component, task: str, inputs: dict, **params):
        """Run ``component`` as task ``task``: every output artifact of its spec gets an s3:// URI
        and a path in the pod; returns ({output: artifact}, return value)."""
        pod = self.pods / task
        kwargs = {name: ([self._bring(pod, a) for a in value] if isinstance(value, list) else self._bring(pod, value))
                  for name, value in inputs.items()}
        made = {}
        for name, spec in component.component_spec.outputs.items():
            if name == "Output" or not spec.type.startswith("system."):
                continue  # the return value
            cls = ARTIFACT_TYPES[spec.type.split("@")[0]]
            made[name] = cls(name=name, uri=f"{ROOT}/{task}/{name}", metadata={})
            made[name].custom_path = str(self._local(pod, made[name].uri))
            Path(made[name].path).parent.mkdir(parents=True, exist_ok=True)
        try:
            value = component.python_func(**kwargs, **made, **params)
            for name, artifact in made.items():  # the launcher uploads whatever the step wrote
                local = Path(artifact.path)
                if local.is_dir():
                    self.fs.put(str(local) + "/", artifact.uri + "/", recursive=True)
                elif local.exists():
                    self.fs.put_file(str(local), artifact.uri)
                self.metadata[artifact.uri] = dict(artifact.metadata)
        finally:
            shutil.rmtree(pod, ignore_errors=True)  # the pod is gone; only what was uploaded remains
        self.ran.add(component.name)
        self.returns[task] = value
        return {name: type(a)(name=name, uri=a.uri, metadata=dict(a.metadata)) for name, a in made.items()}, value


@pytest.fixture(scope="module")
def run(s3, tmp_path_factory):
    """The tiny pipeline, every step a pod: {task: {output: artifact}} and the cluster."""
    import s3fs

    from components.backfill_embeddings import backfill_embeddings
    from components.build_drift_reference import build_drift_reference
    from components.build_training_set import build_training_set
    from components.detect_drift import detect_drift
    from components.embed_shard import embed_shard
    from components.evaluate_model import evaluate_model
    from components.fingerprint_data import fingerprint_data
    from components.gate_model import gate_model
    from components.index_embeddings import index_embeddings
    from components.materialize_features import materialize_features
    from components.notify_run import notify_run
    from components.plan_shards import plan_shards
    from components.record_rejection import record_rejection
    from components.synth_data import synth_data
    from components.train_model import train_model
    from components.trigger_retraining import trigger_retraining
    from components.validate_data import validate_data
    from components.write_rollout_config import write_rollout_config

    cluster = Cluster(s3fs.S3FileSystem(), tmp_path_factory.mktemp("pods"))
    here = tmp_path_factory.mktemp("outside-pods")  # config files "in the image", the Milvus server
    gates = {}
    for name, raw in GATES.items():
        gates[name] = here / f"gate_{name}.yaml"
        gates[name].write_text(yaml.safe_dump(raw))
    milvus, registry = str(here / "milvus.db"), f"s3://{BUCKET}/registry"
    out = {}
    out["synth"], _ = cluster.run(synth_data, "synth-data", {}, preset="tiny", seed=0)
    data = out["synth"]["data"]
    cluster.run(fingerprint_data, "fingerprint-data", {}, data_uri=data.uri)
    out["validate"], _ = cluster.run(validate_data, "validate-data", {"data": data})
    out["features"], _ = cluster.run(build_training_set, "build-training-set",
                                     {"data": data, "validation": out["validate"]["validation"]})
    training_set = out["features"]["training_set"]
    out["materialize"], _ = cluster.run(materialize_features, "materialize-features",
                                        {"data": data, "validation": out["validate"]["validation"]})
    for task, config in (("train-model", "tiny_image_only"), ("train-model-2", "tiny")):
        out[task], _ = cluster.run(train_model, task, {"data": training_set}, config=config, overrides=TRAIN)
    image_only, three_tower = out["train-model"]["model"], out["train-model-2"]["model"]
    for task, model in (("build-drift-reference", image_only), ("build-drift-reference-2", three_tower)):
        out[task], _ = cluster.run(build_drift_reference, task, {"model": model, "data": training_set}, overrides=DRIFT)
    references = {"image_only": out["build-drift-reference"]["reference"], "three_tower": out["build-drift-reference-2"]["reference"]}
    out["evaluate"], _ = cluster.run(evaluate_model, "evaluate-model",
                                     {"data": data, "image_only": image_only, "three_tower": three_tower},
                                     config="tiny", overrides=["eval.n_boot=50", "eval.n_examples=2"])
    for task, gate in (("gate-model", "lenient"), ("gate-model-2", "none")):
        out[task], _ = cluster.run(gate_model, task, {"evaluation": out["evaluate"]["evaluation"]},
                                   candidate="three_tower", config=str(gates[gate]), registry=registry)
    blessing = out["gate-model"]["blessing"]
    out["record-rejection"], _ = cluster.run(record_rejection, "record-rejection",
                                             {"blessing": out["gate-model-2"]["blessing"]})
    # The arms on the shared Milvus; then one without a Milvus URI: Lite inside the step's output.
    for task, model, role, where in (("backfill-embeddings", three_tower, "candidate", milvus),
                                     ("backfill-embeddings-2", image_only, "baseline", milvus),
                                     ("backfill-embeddings-3", image_only, "", "")):
        out[task], _ = cluster.run(backfill_embeddings, task, {"model": model, "data": data}, milvus_uri=where,
                                   alias_role=role, overrides=INDEX)
    out["write-rollout-config"], _ = cluster.run(
        write_rollout_config, "write-rollout-config",
        {"blessing": blessing, "index": out["backfill-embeddings"]["index"], "reference": references["three_tower"],
         "control_model": image_only, "control_reference": references["image_only"],
         "control_index": out["backfill-embeddings-2"]["index"]}, registry=registry, milvus_uri=milvus)
    # The sharded backfill of another alias (plan -> embed x 2 -> index).
    _, shards = cluster.run(plan_shards, "plan-shards", {}, num_shards=2)
    embedded = []
    for shard in shards:
        outputs, _ = cluster.run(embed_shard, f"embed-shard-{shard}", {"model": three_tower, "data": data},
                                 shard=shard, num_shards=len(shards), overrides=INDEX)
        embedded.append(outputs["embeddings"])
    out["index-embeddings"], _ = cluster.run(index_embeddings, "index-embeddings",
                                             {"model": three_tower, "data": data, "shards": embedded}, overrides=INDEX)
    out["detect-drift"], _ = cluster.run(detect_drift, "detect-drift",
                                         {"model": three_tower, "reference": references["three_tower"], "current": data},
                                         overrides=DRIFT)
    cluster.run(trigger_retraining, "trigger-retraining", {}, retraining_due=cluster.returns["detect-drift"])
    status = dsl.PipelineTaskFinalStatus(state="SUCCEEDED", pipeline_job_resource_name="projects/p/runs/r",
                                         pipeline_task_name="exit-handler-1", error_code=None, error_message=None)
    cluster.run(notify_run, "notify-run", {}, status=status, pipeline="vsearch-training", notify_on="never")
    return {"out": out, "cluster": cluster, "milvus": milvus, "registry": registry}


def _read(fs, uri: str) -> bytes:
    with fs.open(uri, "rb") as fh:
        return fh.read()


def test_every_component_ran_as_a_pod(run):
    names = {p.stem for p in Path("components").glob("*.py")} - {"__init__", "image"}
    ran = {n.replace("-", "_") for n in run["cluster"].ran}
    assert names <= ran, f"components not run with uri != path here: {sorted(names - ran)}"


def test_nothing_durable_names_a_pod_local_path(run):
    """Every object in the bucket (model files, reports, blessing, registry and release log,
    rollout plan, index and drift records), the Milvus records, artifact metadata and return
    values: none holds the folder of a pod."""
    cluster = run["cluster"]
    marker = str(cluster.pods).encode()
    found = []
    for key in cluster.fs.find(BUCKET):
        body = _read(cluster.fs, f"s3://{key}")
        if marker in body:
            at = body.index(marker)
            found.append(f"s3://{key}: ...{body[max(0, at - 60):at + 90]!r}")
    for path in [p for p in Path(run["milvus"]).parent.rglob("*") if p.is_file() and "milvus" in str(p)]:
        if marker in path.read_bytes():
            found.append(f"{path} (Milvus records)")
    for uri, metadata in cluster.metadata.items():
        if marker.decode() in json.dumps(metadata):
            found.append(f"metadata of {uri}: {metadata}")
    for task, value in cluster.returns.items():
        if marker.decode() in json.dumps(value, default=str):
            found.append(f"return value of {task}: {value}")
    assert not found, "pod-local paths in durable records:\n" + "\n".join(found)


def test_blessing_rollout_and_kserve_name_the_model_uris(run):
    from vsearch.blessing import Blessing
    from vsearch.rollout.schema import RolloutConfig

    fs, out = run["cluster"].fs, run["out"]
    candidate, baseline = out["train-model-2"]["model"].uri, out["train-model"]["model"].uri
    blessing = Blessing.from_dict(json.loads(_read(fs, out["gate-model"]["blessing"].uri + "/blessing.json")))
    assert blessing.blessed and blessing.candidate.version and blessing.candidate.version.startswith("3t-")
    assert (blessing.candidate.model_uri, blessing.baseline.model_uri) == (candidate, baseline)
    assert blessing.data["path"] == out["synth"]["data"].uri
    assert blessing.data["evaluation"] == out["evaluate"]["evaluation"].uri
    plan = RolloutConfig.model_validate(yaml.safe_load(_read(fs, out["write-rollout-config"]["rollout"].uri + "/rollout.yaml")))
    assert (plan.treatment.model.uri, plan.control.model.uri) == (candidate, baseline)
    # Each arm names its drift reference by URI: what the monitor imports once the arm serves.
    assert (plan.treatment.model.drift_reference, plan.control.model.drift_reference) == (
        out["build-drift-reference-2"]["reference"].uri, out["build-drift-reference"]["reference"].uri)
    services = list(yaml.safe_load_all(_read(fs, out["write-rollout-config"]["rollout"].uri + "/inferenceservice.yaml")))
    storage = {doc["metadata"]["name"]: env["value"] for doc in services
               for c in doc["spec"]["predictor"]["containers"] for env in c.get("env", []) if env["name"] == "STORAGE_URI"}
    assert sorted(storage.values()) == sorted([candidate, baseline])


def test_model_and_index_records_name_uris(run):
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import connect

    fs, out = run["cluster"].fs, run["out"]
    model, training_set = out["train-model-2"]["model"].uri, out["features"]["training_set"].uri
    summary = json.loads(_read(fs, model + "/train_summary.json"))
    assert (summary["data"], summary["out"]) == (training_set, model)
    reference = out["build-drift-reference-2"]["reference"]
    snapshot = json.loads(_read(fs, reference.uri + "/snapshot.json"))
    assert (snapshot["model_dir"], snapshot["data"]) == (model, training_set)
    assert reference.metadata["model_version"] == snapshot["model_version"] == out["train-model-2"]["model"].metadata["version"]
    with connect(run["milvus"], load_index_config()) as store:
        assert store.collection_record(out["backfill-embeddings"]["index"].metadata["collection"])["model_dir"] == model
    for task in ("backfill-embeddings-3", "index-embeddings"):  # Milvus Lite inside the step's output
        index = out[task]["index"]
        assert index.metadata["milvus_uri"] == json.loads(_read(fs, index.uri + "/backfill.json"))["milvus_uri"] == (
            index.uri + "/milvus.db")


def test_kserve_storage_uri_is_never_minio():
    """KFP's default root is minio://; KServe's storage initializer reads s3:// (same bucket)."""
    from vsearch.artifacts import durable_uri
    from vsearch.blessing import Blessing, ModelRef
    from vsearch.rollout.writer import build_manifests, build_rollout, load_rollout_defaults

    assert durable_uri("minio://mlpipeline/v2/artifacts/run/train/model") == "s3://mlpipeline/v2/artifacts/run/train/model"
    assert durable_uri("gs://b/m") == "gs://b/m" and durable_uri("pvc://claim/m") == "pvc://claim/m"
    assert durable_uri("relative/model") == str(Path("relative/model").resolve())
    # A blessing written with minio:// URIs (before durable_uri) still gives KServe s3://.
    blessing = Blessing(blessed=True, reason="ok", candidate=ModelRef("four_tower", "minio://mlpipeline/v2/r/train-3/model", "4t-a"),
                        champion=ModelRef("champion", "minio://mlpipeline/v2/q/train-3/model", "4t-b"))
    cfg = load_rollout_defaults()
    manifests = build_manifests(build_rollout(blessing, "blessing.json", cfg), cfg)
    storage = sorted(e["value"] for doc in manifests for c in doc["spec"]["predictor"]["containers"] for e in c["env"]
                     if e["name"] == "STORAGE_URI")
    assert storage == ["s3://mlpipeline/v2/q/train-3/model", "s3://mlpipeline/v2/r/train-3/model"]
