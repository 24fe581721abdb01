"""The training, backfill and monitoring pipelines compile to the DAGs the issue describes,
with the GPU / toleration / secret / retry / caching wiring of the compile-time config.
(Golden files, strict parse and determinism of every pipeline: test_pipeline_compile.py.)"""

import pytest

from pipelines.compiler import check_package, load_documents
from pipelines.local import required_tasks

MILVUS_SECRET = {
    "secretName": "milvus-credentials",
    "secretNameParameter": {"runtimeValue": {"constant": "milvus-credentials"}},
    "keyToEnv": [{"secretKey": "token", "envVar": "VSEARCH_MILVUS_TOKEN"}],
    "optional": False,  # a cluster run without the Milvus token fails at pod start, not mid-write
}
GPU = {"resourceType": "nvidia.com/gpu", "resourceCount": "1", "type": "nvidia.com/gpu", "count": "1"}


@pytest.fixture(scope="module")
def compiled(default_package):
    """The default-config packages (tests/conftest.py: compiled once per session, what the goldens hold)."""
    return {name: load_documents(default_package(name)) for name in ("training", "training-import", "backfill", "monitoring")}


def _all_tasks(spec: dict) -> dict[str, dict]:
    """Every task of every DAG (root and sub-DAGs), by name."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def _executor(spec: dict, task: dict) -> str:
    return spec["components"][task["componentRef"]["name"]]["executorLabel"]


def _producer(task: dict, artifact: str) -> str:
    return task["inputs"]["artifacts"][artifact]["taskOutputArtifact"]["producerTask"]


def test_training_dag_validates_trains_evaluates_gates_then_ships_or_says_why(compiled):
    spec, platform = compiled["training"]
    tasks = _all_tasks(spec)
    assert _producer(tasks["validate-data"], "data") == "synth-data"
    assert _producer(tasks["build-training-set"], "validation") == "validate-data"
    for train in ("train-model", "train-model-2", "train-model-3"):
        assert _producer(tasks[train], "data") == "build-training-set"  # trained on the point-in-time set
    assert _producer(tasks["train-model-3"], "init_model") == "train-model-2"
    assert _producer(tasks["gate-model"], "evaluation") == "evaluate-model"
    # The If/Else pair branches on the gate's single bool output, both ways (inside the ExitHandler).
    (branches,) = [c["dag"]["tasks"] for name, c in spec["components"].items() if name.startswith("comp-condition-branches-")]
    if_name, else_name = sorted(branches)
    conditions = {name: t["triggerPolicy"]["condition"] for name, t in branches.items()}
    assert conditions == {if_name: "inputs.parameter_values['pipelinechannel--gate-model-Output'] == true",
                          else_name: "!(inputs.parameter_values['pipelinechannel--gate-model-Output'] == true)"}
    blessed = spec["components"][branches[if_name]["componentRef"]["name"]]["dag"]["tasks"]
    rejected = spec["components"][branches[else_name]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(blessed) == {"backfill-embeddings", "backfill-embeddings-2", "write-rollout-config"}
    assert set(rejected) == {"record-rejection"}
    assert _producer(blessed["write-rollout-config"], "index") == "backfill-embeddings"
    assert _producer(blessed["write-rollout-config"], "control_index") == "backfill-embeddings-2"
    candidate, control = blessed["backfill-embeddings"], blessed["backfill-embeddings-2"]
    assert candidate["inputs"]["artifacts"]["model"]["componentInputArtifact"] == \
        "pipelinechannel--train-model-3-model"  # the 4-tower model is the candidate
    # Issue 19: the blessed branch never moves the live alias: the candidate goes under its own
    # alias, the baseline control (first deployment only) under another.
    role = {name: t["inputs"]["parameters"]["alias_role"]["runtimeValue"]["constant"] for name, t in blessed.items()
            if name.startswith("backfill")}
    assert role == {"backfill-embeddings": "candidate", "backfill-embeddings-2": "baseline"}
    assert control["inputs"]["artifacts"]["model"]["componentInputArtifact"] == "pipelinechannel--train-model-model"
    assert control["inputs"]["artifacts"]["unless_champion"]["componentInputArtifact"] == "pipelinechannel--gate-model-blessing"
    # The branch tasks are data-dependent; everything else must run in every run.
    assert set(required_tasks(spec)) == {"synth-data", "validate-data", "build-training-set", "materialize-features",
                                         "train-model", "train-model-2", "train-model-3", "build-drift-reference",
                                         "build-drift-reference-2", "build-drift-reference-3", "evaluate-model", "gate-model",
                                         "notify-run"}
    assert spec["root"]["inputDefinitions"]["parameters"]["milvus_uri"]["defaultValue"] == ""


def test_training_wiring_gpu_secrets_retries_caching_and_display_names(compiled):
    for name in ("training", "training-import"):
        spec, platform = compiled[name]
        tasks = _all_tasks(spec)
        executors = spec["deploymentSpec"]["executors"]
        k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for task_name, task in tasks.items():
            if "executorLabel" in spec["components"][task["componentRef"]["name"]]:
                assert task["taskInfo"]["name"] != task_name, f"{name}: {task_name} has no display name"
        assert {t["taskInfo"]["name"] for n, t in tasks.items() if "triggerPolicy" in t and "condition" in t["triggerPolicy"]} \
            == {"blessed", "not-blessed"}
        for train in ("train-model", "train-model-2", "train-model-3"):
            executor = _executor(spec, tasks[train])
            assert executors[executor]["container"]["resources"]["accelerator"] == GPU
            assert k8s[executor]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
            assert "retryPolicy" in tasks[train]
        backfill = _executor(spec, tasks["backfill-embeddings"])
        assert MILVUS_SECRET in k8s[backfill]["secretAsEnv"]
        assert "accelerator" not in executors[backfill]["container"].get("resources", {})
        assert tasks["backfill-embeddings"]["retryPolicy"]["maxRetryCount"] == 2
        for task_name in ("gate-model", "write-rollout-config", "record-rejection", "validate-data"):
            assert not any(s["secretName"] == "milvus-credentials"
                           for s in k8s.get(_executor(spec, tasks[task_name]), {}).get("secretAsEnv", []))
        # Look-ups and writes to the outside world never come from the cache.
        for task_name in ("build-training-set", "gate-model", "backfill-embeddings", "write-rollout-config"):
            assert tasks[task_name]["cachingOptions"] == {}, task_name
        assert tasks["train-model"]["cachingOptions"] == {"enableCache": True}


def test_backfill_dag_fans_out_shards_and_swaps_once(compiled):
    spec, platform = compiled["backfill"]
    root = spec["root"]["dag"]["tasks"]
    assert root["for-loop-1"]["parameterIterator"]["items"] == {"inputParameter": "pipelinechannel--plan-shards-Output"}
    loop = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
    assert set(loop) == {"embed-shard"}
    index = root["index-embeddings"]
    assert index["inputs"]["artifacts"]["shards"] == {"taskOutputArtifact": {"outputArtifactKey": "pipelinechannel--embed-shard-embeddings", "producerTask": "for-loop-1"}}
    assert spec["root"]["dag"]["outputs"]["parameters"]["Output"]["valueFromParameter"]["producerSubtask"] == "index-embeddings"
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    embed = _executor(spec, loop["embed-shard"])
    assert executors[embed]["container"]["resources"]["accelerator"] == GPU  # encoding is the GPU step
    assert k8s[embed]["nodeSelector"] == {"labels": {"nvidia.com/gpu.present": "true"}}
    assert MILVUS_SECRET in k8s[_executor(spec, index)]["secretAsEnv"]
    assert MILVUS_SECRET not in k8s[embed]["secretAsEnv"]
    assert index["cachingOptions"] == {} and "retryPolicy" in loop["embed-shard"]


def test_each_model_gets_its_drift_reference_step_and_the_plan_names_the_arms(compiled):
    """The DAG shows where the monitor's input comes from: build_drift_reference after each
    train_model (its model, the same training set), and the release plan takes the 4-tower's
    and the baseline's (through the branch's inputs)."""
    spec, _ = compiled["training"]
    tasks = _all_tasks(spec)
    for train, reference in (("train-model", "build-drift-reference"), ("train-model-2", "build-drift-reference-2"),
                             ("train-model-3", "build-drift-reference-3")):
        assert _producer(tasks[reference], "model") == train
        assert _producer(tasks[reference], "data") == "build-training-set"
    rollout = tasks["write-rollout-config"]["inputs"]["artifacts"]
    assert rollout["reference"] == {"componentInputArtifact": "pipelinechannel--build-drift-reference-3-reference"}
    assert rollout["control_reference"] == {"componentInputArtifact": "pipelinechannel--build-drift-reference-reference"}


def test_monitoring_imports_the_model_and_its_drift_reference(compiled):
    spec, _ = compiled["monitoring"]
    tasks = spec["root"]["dag"]["tasks"]
    imported = {name: _producer(tasks["detect-drift"], name) for name in ("model", "reference", "current")}
    uris = {name: tasks[task]["inputs"]["parameters"]["uri"]["componentInputParameter"] for name, task in imported.items()}
    assert uris == {"model": "model_uri", "reference": "reference_uri", "current": "data_uri"}


def test_monitoring_outputs_whether_retraining_is_due(compiled):
    spec, platform = compiled["monitoring"]
    assert spec["root"]["outputDefinitions"]["parameters"]["Output"]["parameterType"] == "BOOLEAN"
    task = spec["root"]["dag"]["tasks"]["detect-drift"]
    assert task["cachingOptions"] == {}  # recent data: never from the cache
    assert task["taskInfo"]["name"] == "Detect drift (retraining due?)"
    assert set(spec["root"]["inputDefinitions"]["parameters"]) >= {"model_uri", "reference_uri", "data_uri", "since", "until"}


def test_gpu_settings_come_from_the_compile_time_config(tmp_path, cli_compile):
    out = cli_compile(tmp_path, "--name", "backfill", "--name", "training", "--set", "gpu.accelerator_type=nvidia.com/mig-1g.10gb",
                      "--set", "gpu.accelerator_limit=2", "--set", "gpu.steps=[embed_shard]")
    path = out / "backfill.yaml"
    check_package(path)
    spec, platform = load_documents(path)
    embed = spec["components"]["comp-embed-shard"]["executorLabel"]
    assert spec["deploymentSpec"]["executors"][embed]["container"]["resources"]["accelerator"]["resourceCount"] == "2"
    spec, _ = load_documents(out / "training.yaml")
    train = spec["components"]["comp-train-model"]["executorLabel"]
    assert "accelerator" not in spec["deploymentSpec"]["executors"][train]["container"].get("resources", {})


def test_every_step_requests_cpu_and_memory_gpu_steps_get_shm_and_shards_run_bounded(compiled):
    """Issue 21 item 6: no step was scheduled with requests (BestEffort pods), GPU steps had a
    64 MB /dev/shm, and the shard fan-out had no parallelism bound."""
    for name in ("training", "training-import", "backfill", "monitoring"):
        spec, platform = compiled[name]
        k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        for label, executor in spec["deploymentSpec"]["executors"].items():
            if "importer" in executor:
                continue
            resources = executor["container"].get("resources", {})
            assert resources.get("resourceCpuRequest") and resources.get("resourceMemoryRequest"), (name, label)
            gpu = "accelerator" in resources
            shm = [m for m in k8s.get(label, {}).get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
            assert bool(shm) == gpu, (name, label)
            if gpu:
                assert shm[0]["medium"] == "Memory" and shm[0]["sizeLimit"] == "8Gi"
                assert float(resources["cpuRequest"]) <= float(resources["cpuLimit"])
    spec, _ = compiled["training"]
    train = spec["deploymentSpec"]["executors"][_executor(spec, _all_tasks(spec)["train-model"])]["container"]["resources"]
    assert train["resourceCpuRequest"] == "4" and train["resourceMemoryRequest"] == "16G"
    spec, _ = compiled["backfill"]
    assert spec["root"]["dag"]["tasks"]["for-loop-1"]["iteratorPolicy"] == {"parallelismLimit": 8}
