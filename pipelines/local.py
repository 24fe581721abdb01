"""Running a compiled pipeline on this machine with kfp.local.

The very YAML that would be submitted to Kubeflow is compiled, loaded back and run. Two runners:

- ``subprocess`` (default): each task in a subprocess of this Python environment
  (``use_venv=False``: the project's venv plays the project image);
- ``container``: each task in its compiled image with its compiled command
  (``kfp.local.DockerRunner``), through podman's Docker-compatible API (``podman_api``), with
  no network and as the image's non-root user, as in a restricted pod.

Kubernetes settings (GPUs, secrets, tolerations) have no effect
locally. Everything stays in the run folder ``<out>/<pipeline>-<timestamp>/``:

- one folder per task with its output artifacts and ``executor_output.json``;
- ``pipeline.yaml``: the compiled package that ran;
- ``run.json``: which tasks ran, their display names, outputs (URIs and metadata) and the
  wall-clock time.

kfp.local can skip a branch silently and still report success, so every task that must run
(all tasks outside ``dsl.If``/``ParallelFor`` groups) is checked to have produced its
executor output; a missing one fails the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.compiler import compile_pipeline, load_documents
from pipelines.config import PipelineConfig
from vsearch.config import ConfigError

RUN_FILE = "run.json"
PACKAGE_FILE = "pipeline.yaml"
EXECUTOR_OUTPUT = "executor_output.json"

# Small but complete: the tiny benchmark and tiny configs, a few steps (about a minute on 2 cores).
TINY_PARAMS: dict[str, dict[str, Any]] = {
    "model": {
        "preset": "tiny",
        "image_only_config": "tiny_image_only",
        "three_tower_config": "tiny",
        "four_tower_config": "tiny_four_tower",
        "train_overrides": ["train.max_steps=3"],
        "eval_overrides": ["eval.n_boot=50"],
    },
    "model-import": {
        "image_only_config": "tiny_image_only",
        "three_tower_config": "tiny",
        "four_tower_config": "tiny_four_tower",
        "train_overrides": ["train.max_steps=3"],
        "eval_overrides": ["eval.n_boot=50"],
    },
}
# The training pipelines add the gate, indexing and rollout: the same small models, a small
# verification sample, decoding in the main process.
TINY_PARAMS["training"] = {**TINY_PARAMS["model"], "index_overrides": ["verify.sample_size=50", "backfill.num_workers=0"]}
TINY_PARAMS["training-import"] = {**TINY_PARAMS["model-import"], "index_overrides": ["verify.sample_size=50", "backfill.num_workers=0"]}
TINY_PARAMS["backfill"] = {"num_shards": 2, "index_overrides": ["verify.sample_size=50", "backfill.num_workers=0"]}
TINY_PARAMS["monitoring"] = {"drift_overrides": ["sample.max_queries=100", "sample.max_products=100", "embeddings.plot_sample=30"]}


def _executor_tasks(spec: dict, conditional: bool) -> dict[str, str]:
    components = spec.get("components", {})
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    tasks: dict[str, str] = {}

    def walk(dag: dict) -> None:
        for name, task in sorted(dag.get("tasks", {}).items()):
            gated = bool(task.get("triggerPolicy", {}).get("condition")) or any(
                key in task for key in ("iteratorPolicy", "parameterIterator", "artifactIterator")
            )
            if gated and not conditional:
                continue
            component = components.get(task["componentRef"]["name"], {})
            if "dag" in component:
                walk(component["dag"])
            elif "importer" not in executors.get(component.get("executorLabel", ""), {}):
                # (kfp.local resolves importers in the driver: they leave no executor output.)
                tasks[name] = task.get("taskInfo", {}).get("name", name)

    walk(spec["root"]["dag"])
    return tasks


def _plain(outputs: dict) -> dict:
    """Parameter outputs as JSON values; artifact outputs as their URI."""
    plain = {}
    for key, value in sorted(outputs.items()):
        plain[key] = value if isinstance(value, (str, int, float, bool, list, dict)) or value is None else getattr(value, "uri", str(value))
    return plain


def required_tasks(spec: dict) -> dict[str, str]:
    """{task name: display name} of the executor tasks that must run in every run.

    Tasks inside a condition or a loop are excluded (whether they run depends on data: name
    the branch a run must take with ``expect``); unconditional sub-DAGs are walked.
    """
    return _executor_tasks(spec, conditional=False)


# The containers.conf podman needs on these machines (runc, cgroupfs, no default ulimits: shared
# NOTES.md); dockerfiles/build.py writes it, and the API service below uses the same one.
CONTAINERS_CONF = Path(__file__).resolve().parents[1] / "build" / "containers" / "containers.conf"


@contextlib.contextmanager
def podman_api(workdir: str | os.PathLike, timeout: float = 60.0) -> Iterator[str]:
    """Serve podman's Docker-compatible API on a unix socket in ``workdir``; yields its DOCKER_HOST.

    ``kfp.local.DockerRunner`` talks to a Docker API (``docker.from_env()``); rootful podman
    serves one (``podman system service``). The service stops when the block ends.
    """
    import docker

    sock = Path(workdir).absolute() / "podman.sock"
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env and CONTAINERS_CONF.is_file():
        env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    host = f"unix://{sock}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"podman system service exited ({proc.returncode}): {proc.stderr.read()[-500:]}")
            if sock.exists():
                try:
                    docker.DockerClient(base_url=host).ping()
                    break
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"podman system service: no API on {sock} after {timeout:.0f} s")
            time.sleep(0.2)
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _runner(runner: str, docker_host: str | None):
    from kfp import local

    if runner == "subprocess":
        return local.SubprocessRunner(use_venv=False)
    if runner == "container":
        if not docker_host:
            raise ConfigError("the container runner needs a Docker API (DOCKER_HOST, e.g. from podman_api)")
        # As in a restricted pod: no network, the image's own non-root user, nothing added.
        return local.DockerRunner(network_mode="none", cap_drop=["ALL"], security_opt=["no-new-privileges"])
    raise ConfigError(f"runner '{runner}': expected subprocess or container")


def run_local(
    name: str,
    cfg: PipelineConfig,
    out: str | os.PathLike,
    params: dict[str, Any] | None = None,
    expect: list[str] | tuple[str, ...] = (),
    runner: str = "subprocess",
    docker_host: str | None = None,
) -> dict:
    """Compile pipeline ``name`` with ``cfg`` and run that package locally (see ``run_package``).

    kfp.local gives no task an accelerator, so the package is compiled without them: a step
    compiled with one runs the GPU image and stops at once without CUDA (``pipelines.wiring``).
    """
    import dataclasses

    cfg = dataclasses.replace(cfg, gpu=dataclasses.replace(cfg.gpu, enabled=False))
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    package_dir = Path(tempfile.mkdtemp(prefix=".compiled-", dir=out))
    try:
        package = compile_pipeline(name, cfg, package_dir)
        return run_package(package, out, params, expect, name=name, runner=runner, docker_host=docker_host)
    finally:
        shutil.rmtree(package_dir, ignore_errors=True)


def run_package(
    package: str | os.PathLike,
    out: str | os.PathLike,
    params: dict[str, Any] | None = None,
    expect: list[str] | tuple[str, ...] = (),
    name: str | None = None,
    runner: str = "subprocess",
    docker_host: str | None = None,
) -> dict:
    """Run a compiled package with kfp.local; check that the tasks that must run did.

    Args:
        package: compiled pipeline YAML.
        out: pipeline root; the run gets ``<out>/<pipeline>-<timestamp>/``.
        params: pipeline parameters.
        expect: task names (``train-model-2``) or display names that this run must execute
            besides the unconditional ones, e.g. the tasks of the branch it should take.
        runner: ``subprocess`` (this venv) or ``container`` (each task in its compiled image,
            through the Docker API at ``docker_host``).

    Returns:
        The run.json manifest.

    Raises:
        RuntimeError: a task failed, or a task that had to run left no executor output.
    """
    from kfp import local
    from kfp.components import load_component_from_file

    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    spec = load_documents(package)[0]
    every = _executor_tasks(spec, conditional=True)
    by_display = {display: task for task, display in every.items()}
    required = required_tasks(spec)
    for item in expect:
        task = item if item in every else by_display.get(item)
        if task is None:
            raise ConfigError(f"{package}: --expect '{item}': no such task or display name (tasks: {sorted(every)})")
        required[task] = every[task]
    pipeline = load_component_from_file(str(package))
    before = {p.name for p in out.iterdir()}
    # kfp.local deletes its workspace_root afterwards: give it a folder of its own.
    workspace = tempfile.mkdtemp(prefix="vsearch-kfp-workspace-")
    chosen = _runner(runner, docker_host)
    if runner == "container":
        # Tasks run as the image's non-root user and write into the pipeline root, which is
        # bind-mounted at the same path (DockerRunner); a cluster's object store is writable too.
        for folder in (out, Path(workspace)):
            folder.chmod(0o1777)
    local.init(runner=chosen, pipeline_root=str(out), workspace_root=workspace)
    started = time.perf_counter()
    previous_host = os.environ.get("DOCKER_HOST")
    if docker_host:
        os.environ["DOCKER_HOST"] = docker_host  # DockerRunner calls docker.from_env()
    try:
        with warnings.catch_warnings():
            # One warning per task that GPUs, secrets and display names are not applied
            # locally: expected, and said once in the module docstring.
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
            result = pipeline(**(params or {}))
    finally:
        if docker_host:
            if previous_host is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = previous_host
        shutil.rmtree(workspace, ignore_errors=True)
    seconds = time.perf_counter() - started
    new = sorted(p for p in out.iterdir() if p.name not in before and p.is_dir() and not p.name.startswith("."))
    if len(new) != 1:
        raise RuntimeError(f"{out}: expected one new run folder from kfp.local, found {[p.name for p in new]}")
    run_dir = new[0]
    shutil.copyfile(package, run_dir / PACKAGE_FILE)

    tasks: dict[str, Any] = {}
    # Tasks inside dsl.ParallelFor run in <loop>-iteration-<i>/<task>/: recorded as "<loop>-iteration-<i>/<task>".
    task_dirs = sorted(p for p in run_dir.iterdir() if (p / EXECUTOR_OUTPUT).is_file())
    task_dirs += sorted(p for p in run_dir.glob("*-iteration-*/*") if (p / EXECUTOR_OUTPUT).is_file())
    for task_dir in task_dirs:
        outputs = json.loads((task_dir / EXECUTOR_OUTPUT).read_text())
        task_key = task_dir.relative_to(run_dir).as_posix()
        tasks[task_key] = {
            "display_name": every.get(task_dir.name, task_dir.name),
            "outputs": {
                key: [{"uri": a["uri"], "metadata": a.get("metadata", {})} for a in value.get("artifacts", [])]
                for key, value in sorted(outputs.get("artifacts", {}).items())
            },
            "parameters": outputs.get("parameterValues", {}),
        }
    manifest = {
        "pipeline": name or spec["pipelineInfo"]["name"],
        "pipeline_name": spec["pipelineInfo"]["name"],
        "run_dir": str(run_dir),
        "package": str(run_dir / PACKAGE_FILE),
        "params": params or {},
        "runner": runner,
        "seconds": round(seconds, 1),
        # The pipeline's own outputs (e.g. the monitoring pipeline's "retraining due").
        "outputs": _plain(getattr(result, "outputs", None) or {}),
        "required_tasks": required,
        "tasks": tasks,
    }
    (run_dir / RUN_FILE).write_text(json.dumps(manifest, indent=2))
    missing = sorted(set(required) - {key.rsplit("/", 1)[-1] for key in tasks})
    if missing:
        raise RuntimeError(
            f"{run_dir}: kfp.local reported success but task(s) {missing} did not run "
            f"({', '.join(required[m] for m in missing)})"
        )
    return manifest
