"""Compiling the pipelines: golden files, strict protobuf parse, GPU / toleration / secret wiring.

Regenerate the golden files after an intended change (and review the diff):
    .venv/bin/python -m vsearch.cli pipeline compile --out tests/pipelines/golden
"""

from pathlib import Path

import pytest
import yaml

from components.image import GPU_IMAGE, IMAGE
from pipelines.cli import main
from pipelines.compiler import PIPELINES, check_package, load_documents
from pipelines.config import load_pipeline_config
from vsearch.cli import main as vsearch_main
from vsearch.config import ConfigError
from vsearch.training.device import REQUIRE_CUDA_ENV

GOLDEN = Path(__file__).parent / "golden"
EXAMPLE = Path(__file__).parents[2] / "pipelines" / "configs" / "cluster.example.yaml"
REGEN = ".venv/bin/python -m vsearch.cli pipeline compile --out tests/pipelines/golden"
TRAIN_TASKS = {"train-model": "Train image-only baseline", "train-model-2": "Train 3-tower",
               "train-model-3": "Train 4-tower (from 3-tower)"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, cli_compile):
    """Every pipeline as `vsearch pipeline compile` writes it (the golden test's subject), a
    compile of its own: test_compiling_is_deterministic compares it with ``default_package``."""
    out = cli_compile(tmp_path_factory.mktemp("build"))
    return {p.stem: p for p in out.glob("*.yaml")}


@pytest.fixture(scope="module")
def example_uncached(tmp_path_factory, cli_compile):
    """Every pipeline as ``vsearch pipeline compile --config <the example cluster config> --set
    caching=false`` writes it. One compile serves the example-config test and the caching-off
    check: caching is one switch, and the example's ``caching: true`` is the default's."""
    return cli_compile(tmp_path_factory.mktemp("example-uncached"), "--config", str(EXAMPLE), "--set", "caching=false")


@pytest.fixture(scope="module")
def packages(default_package):
    """Every pipeline compiled with the default config (tests/conftest.py: once per session,
    shared with the other pipeline tests); read-only."""
    return {name: default_package(name) for name in sorted(PIPELINES)}


def _tasks(spec: dict) -> dict[str, dict]:
    """Every task of the root DAG and its sub-DAGs (the body runs inside a dsl.ExitHandler)."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def _executor_of(spec: dict, task: str) -> str:
    component = _tasks(spec)[task]["componentRef"]["name"]
    return spec["components"][component]["executorLabel"]


def test_compile_writes_every_pipeline_and_matches_the_golden_files(compiled):
    assert set(compiled) == set(PIPELINES)
    for name, path in compiled.items():
        golden = GOLDEN / f"{name}.yaml"
        assert golden.is_file(), f"missing golden file {golden}; run: {REGEN}"
        assert path.read_text() == golden.read_text(), f"{name}.yaml differs from {golden}; if intended, run: {REGEN}"


def test_compiled_documents_parse_strictly_into_pipeline_and_platform_specs(packages, tmp_path):
    for name, path in packages.items():
        spec, platform = check_package(path)
        assert spec.pipeline_info.name == f"vsearch-{name}"
        assert platform is not None and "kubernetes" in platform.platforms
        assert len(load_documents(path)) == 2
    # The strict check is not a formality: an unknown field anywhere is refused.
    docs = load_documents(packages["model"])
    docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-model"]["gpuCount"] = 1
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all(docs))
    with pytest.raises(ValueError, match="gpuCount"):
        check_package(broken)


def test_gpu_tolerations_secrets_retries_and_display_names_are_wired(packages):
    spec, platform = load_documents(packages["model"])
    tasks = _tasks(spec)
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for task, display in TRAIN_TASKS.items():
        assert tasks[task]["taskInfo"]["name"] == display
        executor = _executor_of(spec, task)
        resources = executors[executor]["container"]["resources"]
        assert resources["accelerator"] == {"resourceType": "nvidia.com/gpu", "resourceCount": "1",
                                            "type": "nvidia.com/gpu", "count": "1"}
        assert resources["resourceCpuLimit"] == "8" and resources["resourceMemoryLimit"] == "32G"
        assert k8s[executor]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert k8s[executor]["nodeSelector"] == {"labels": {"nvidia.com/gpu.present": "true"}}
        assert tasks[task]["retryPolicy"] == {"maxRetryCount": 2, "backoffDuration": "60s", "backoffFactor": 2.0,
                                              "backoffMaxDuration": "3600s"}
    assert tasks["train-model-3"]["inputs"]["artifacts"]["init_model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model", "producerTask": "train-model-2"}
    for task in ("synth-data", "evaluate-model"):
        executor = _executor_of(spec, task)
        assert "accelerator" not in executors[executor]["container"].get("resources", {})
        assert "tolerations" not in k8s[executor] and "nodeSelector" not in k8s[executor]
    assert [s["secretName"] for s in k8s.pop("exec-notify-run")["secretAsEnv"]] == ["vsearch-notify"]  # the exit step
    for executor, config in k8s.items():
        assert config["secretAsEnv"] == [{
            "secretName": "vsearch-object-store",
            "secretNameParameter": {"runtimeValue": {"constant": "vsearch-object-store"}},
            "keyToEnv": [{"secretKey": "AWS_ACCESS_KEY_ID", "envVar": "AWS_ACCESS_KEY_ID"},
                         {"secretKey": "AWS_SECRET_ACCESS_KEY", "envVar": "AWS_SECRET_ACCESS_KEY"}],
            "optional": True,
        }]
    display = {t["taskInfo"]["name"] for t in tasks.values()}
    assert not display & set(tasks), "every task has a human display name"
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == (GPU_IMAGE if "accelerator" in container.get("resources", {}) else IMAGE)
        assert "pip install" not in " ".join(container["command"])  # install_kfp_package=False, no packages


def _accelerator_tasks(spec: dict) -> dict[str, bool]:
    """{executor: has an accelerator} of a compiled pipeline's container executors (not importers)."""
    return {label: "accelerator" in e["container"].get("resources", {})
            for label, e in spec["deploymentSpec"]["executors"].items() if "container" in e}


def test_every_task_with_an_accelerator_runs_the_gpu_image_and_requires_cuda(packages):
    """Issue 21 item 1: train_model and embed_shard held a GPU on the CPU-torch image, and
    ``train.device: auto`` then trained on the CPU without a word."""
    pipelines_with_gpus = set()
    for name, path in packages.items():
        spec, _ = load_documents(path)
        for label, gpu in _accelerator_tasks(spec).items():
            container = spec["deploymentSpec"]["executors"][label]["container"]
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            assert container["image"] == (GPU_IMAGE if gpu else IMAGE), f"{name}.yaml {label}: image {container['image']}"
            assert (env.get(REQUIRE_CUDA_ENV) == "1") == gpu, f"{name}.yaml {label}: {REQUIRE_CUDA_ENV} {env.get(REQUIRE_CUDA_ENV)}"
            pipelines_with_gpus |= {name} if gpu else set()
    assert {"model", "model-import", "training", "training-import", "backfill"} <= pipelines_with_gpus  # the rule was exercised


def test_compile_time_config_changes_the_wiring(tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "image: registry.example/vsearch:1.2.3\n"
        "gpu_image: registry.example/vsearch-gpu:1.2.3\n"
        "gpu:\n"
        "  accelerator_type: nvidia.com/mig-1g.10gb\n"
        "  accelerator_limit: 2\n"
        "  node_selector: {cloud.google.com/gke-accelerator: nvidia-h100-80gb}\n"
        "  tolerations: [{key: dedicated, operator: Equal, value: ml, effect: NoSchedule}]\n"
        "secrets:\n"
        "  - {name: milvus-prod, env: {token: MILVUS_TOKEN}, steps: [evaluate_model]}\n"
        "retry: {num_retries: 0}\n"
    )
    out = tmp_path / "build"
    assert main(["compile", "--out", str(out), "--name", "model", "--config", str(config),
                 "--set", "caching=false"]) == 0
    spec, platform = load_documents(out / "model.yaml")
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert {executors[label]["container"]["image"] for label, gpu in _accelerator_tasks(spec).items() if not gpu} == {
        "registry.example/vsearch:1.2.3"}
    assert {executors[label]["container"]["image"] for label, gpu in _accelerator_tasks(spec).items() if gpu} == {
        "registry.example/vsearch-gpu:1.2.3"}
    train = _executor_of(spec, "train-model")
    assert executors[train]["container"]["resources"]["accelerator"]["resourceType"] == "nvidia.com/mig-1g.10gb"
    assert executors[train]["container"]["resources"]["accelerator"]["resourceCount"] == "2"
    assert k8s[train] == {"nodeSelector": {"labels": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}},
                          "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
                          "emptyDirMounts": [{"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": "8Gi"}]}
    evaluate = _executor_of(spec, "evaluate-model")
    assert [s["secretName"] for s in k8s[evaluate]["secretAsEnv"]] == ["milvus-prod"]
    tasks = _tasks(spec)
    assert all("retryPolicy" not in t for t in tasks.values())
    assert all(t.get("cachingOptions", {}) == {} for t in tasks.values())  # enableCache false is the proto default

    assert main(["compile", "--out", str(out), "--name", "model", "--set", "gpu.enabled=false"]) == 0
    spec, platform = load_documents(out / "model.yaml")
    train = _executor_of(spec, "train-model")
    assert "accelerator" not in spec["deploymentSpec"]["executors"][train]["container"].get("resources", {})
    assert "tolerations" not in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][train]
    assert {spec["deploymentSpec"]["executors"][label]["container"]["image"] for label in _accelerator_tasks(spec)} == {IMAGE}
    assert REQUIRE_CUDA_ENV not in yaml.safe_dump(spec)


def _step_caching(spec: dict) -> dict[str, tuple[str, bool]]:
    """{task: (the component function it runs, as compiled; whether it may use the cache)} for
    every container task (importers are KFP's own and follow the imported artifact)."""
    executors = spec["deploymentSpec"]["executors"]
    out = {}
    for name, task in _tasks(spec).items():
        component = spec["components"][task["componentRef"]["name"]]
        container = executors.get(component.get("executorLabel"), {}).get("container")
        if container:
            args = container["args"]
            out[name] = (args[args.index("--function_to_execute") + 1], task.get("cachingOptions", {}).get("enableCache", False))
    return out


def test_lookups_never_use_the_cache(packages, example_uncached):
    cfg = load_pipeline_config()
    # What reads or changes the outside world (the data behind a fixed URI, the champion, Milvus,
    # the online store, a webhook) is a look-up.
    assert {"fingerprint_data", "build_training_set", "detect_drift", "gate_model", "backfill_embeddings",
            "index_embeddings", "write_rollout_config", "trigger_retraining", "materialize_features",
            "notify_run"} <= set(cfg.no_cache_steps)
    steps = {}
    for name, package in packages.items():
        for task, (step, cached) in _step_caching(load_documents(package)[0]).items():
            steps[step] = task
            assert cached == (step not in cfg.no_cache_steps), (name, task, step, cached)
    # Every look-up the config names is a step that some pipeline runs (a name that matches
    # nothing protects nothing), and some steps do use the cache.
    assert set(cfg.no_cache_steps) <= set(steps), sorted(set(cfg.no_cache_steps) - set(steps))
    assert {"synth_data", "train_model", "evaluate_model"} <= set(steps) - set(cfg.no_cache_steps)
    # caching off: no step of any pipeline uses the cache.
    uncached = sorted(example_uncached.glob("*.yaml"))
    assert sorted(p.stem for p in uncached) == sorted(PIPELINES)
    for package in uncached:
        assert not any(cached for _, cached in _step_caching(load_documents(package)[0]).values()), package.name


def test_bad_pipeline_configs_are_refused_with_the_file_named(tmp_path, capsys):
    config = tmp_path / "cluster.yaml"
    config.write_text("gpu: {acelerator_limit: 2}\n")
    with pytest.raises(ConfigError, match=r"cluster.yaml.gpu: unknown key\(s\) \['acelerator_limit'\]"):
        load_pipeline_config(config)
    assert vsearch_main(["pipeline", "compile", "--out", str(tmp_path / "b"), "--config", str(config)]) == 2
    assert "acelerator_limit" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").iterdir())
    for override, message in (("gpu.tolerations=[{operator: Maybe}]", "Equal or Exists"),
                              ("secrets=[{name: s, env: {token: 'BAD-NAME'}}]", "environment variable"),
                              ("image=''", "image"), ("gpu_image='a b'", "gpu_image"),
                              # typed by vsearch.config's loader: a wrong type names its key
                              ("caching=sometimes", "caching: expected bool"),
                              ("retry.backoff_factor=fast", "retry.backoff_factor: expected float")):
        with pytest.raises(ConfigError, match=message):
            load_pipeline_config(None, [override])


def test_a_pipeline_config_file_is_a_file_whatever_its_name_and_merges_by_the_one_rule(tmp_path, monkeypatch):
    """``--config pipe.cfg`` in the working folder is that file (not a preset name); its sections
    merge into the built-in config key by key (`vsearch.config.deep_merge`), a plain mapping
    (``gpu.node_selector``) and a list replace."""
    (tmp_path / "pipe.cfg").write_text("gpu: {accelerator_limit: 2, node_selector: {pool: gpu}}\n"
                                       "resources: {cpu_request: '3'}\nretry: {steps: [train_model]}\n")
    monkeypatch.chdir(tmp_path)
    cfg, default = load_pipeline_config("pipe.cfg"), load_pipeline_config()
    assert (cfg.gpu.accelerator_limit, cfg.gpu.node_selector, cfg.gpu.tolerations) == (2, {"pool": "gpu"}, default.gpu.tolerations)
    assert (cfg.resources.cpu_request, cfg.resources.steps) == ("3", default.resources.steps)
    assert cfg.retry.steps == ["train_model"] and cfg.retry.num_retries == default.retry.num_retries
    with pytest.raises(ConfigError, match="nope.cfg: pipeline config file not found"):
        load_pipeline_config("nope.cfg")


def test_compiling_is_deterministic_and_leaves_no_temporary_files(compiled, packages):
    """Two separate compiles of every pipeline (``compiled`` and ``default_package``, each the CLI
    in its own interpreter) are byte for byte the same, and each folder holds only the packages:
    no ``.<name>.*.yaml`` temporary file is left. (A failing golden test with this one passing
    means a stale golden file; with this one failing, a nondeterministic compile.)"""
    expected = sorted(f"{n}.yaml" for n in PIPELINES)
    for folder in {compiled["model"].parent, packages["model"].parent}:
        assert sorted(p.name for p in folder.iterdir()) == expected, folder
    assert {n: p.read_bytes() for n, p in compiled.items()} == {n: p.read_bytes() for n, p in packages.items()}


def test_the_example_cluster_config_compiles(example_uncached):
    cfg = load_pipeline_config(EXAMPLE)
    assert cfg.image == "registry.example.com/ml/vsearch:0.1.0-python3.11"
    assert cfg.gpu_image == "registry.example.com/ml/vsearch-gpu:0.1.0-cuda13.0"
    assert cfg.gpu.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert cfg.gpu.accelerator_limit == 1 and cfg.gpu.memory_limit == "48G"
    assert cfg.caching  # the compile below turns it off: the one difference, checked by test_lookups_never_use_the_cache
    # Every pipeline, no temporary file left, each strictly valid and built from the example's images.
    assert sorted(p.name for p in example_uncached.iterdir()) == sorted(f"{n}.yaml" for n in PIPELINES)
    for path in example_uncached.iterdir():
        check_package(path)
        assert cfg.image in path.read_text(), path.name
