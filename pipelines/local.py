"""Running a compiled pipeline on this machine with kfp.local.

The very YAML that would be submitted to Kubeflow is compiled, loaded back and run. Two runners:

- ``subprocess`` (default): each task in a subprocess of this Python environment
  (``use_venv=False``: the project's venv plays the project image), forked from a warm
  ``pipelines.task_server`` that has imported torch, transformers and pandas once (the task's
  own command, inputs and environment; ``warm=False``: a fresh interpreter per task);
- ``container``: each task in its compiled image with its compiled command
  (``kfp.local.DockerRunner``), through podman's Docker-compatible API (``podman_api``), with
  no network and as the image's non-root user, as in a restricted pod.

Kubernetes settings (GPUs, secrets, tolerations) have no effect
locally. Everything stays in the run folder ``<out>/<pipeline>-<timestamp>/``:

- one folder per task with its output artifacts and ``executor_output.json``;
- ``pipeline.yaml``: the compiled package that ran;
- ``run.json``: which tasks ran, their display names, outputs (URIs and metadata) and the
  wall-clock time;
- ``executor.log``: everything kfp.local and the tasks printed (about 100 kB for the tiny
  demo). The console gets one line per task instead (name, status, seconds, key output), and
  a failure carries the failing task's last lines.

kfp.local can skip a branch silently and still report success, so every task that must run
(all tasks outside ``dsl.If``/``ParallelFor`` groups) is checked to have produced its
executor output; a missing one fails the run.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipelines import task_server
from pipelines.compiler import compile_pipeline, load_documents
from pipelines.config import PipelineConfig
from vsearch.config import ConfigError

RUN_FILE = "run.json"
PACKAGE_FILE = "pipeline.yaml"
EXECUTOR_OUTPUT = "executor_output.json"
LOG_FILE = "executor.log"
FAILURE_TAIL = 30  # log lines of a failed task carried by the error

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
        task_server.stop_process(proc)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
_OUTPUT_FILE = re.compile(r'"outputFile": "([^"]+/' + re.escape(EXECUTOR_OUTPUT) + r')"')


def key_output(executor_output: dict, width: int = 90) -> str:
    """One short text for a task's outputs: its parameter values, a few logged metrics, or the
    names of its artifacts (``Output=True``, ``steps=3, loss=2.31``, ``data, report``)."""
    parts = [f"{k}={json.dumps(v)[:40]}" for k, v in sorted(executor_output.get("parameterValues", {}).items())]
    for name, value in sorted(executor_output.get("artifacts", {}).items()):
        artifacts = value.get("artifacts", [])
        metadata = artifacts[0].get("metadata", {}) if artifacts else {}
        numbers = [(k, v) for k, v in metadata.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        parts.append(", ".join(f"{k}={v:.4g}" for k, v in numbers[:3]) if numbers and "metrics" in name else name)
    text = ", ".join(parts)
    return text if len(text) <= width else text[: width - 3] + "..."


class _TaskLines:
    """Follows kfp.local's output line by line: keeps each task's last lines and prints one line
    per finished task (kfp.local runs one task at a time)."""

    def __init__(self, console: Callable[[str], None], display_names: dict[str, str]):
        self.console = console
        self.display_names = display_names
        self.current: str | None = None
        self.started: dict[str, float] = {}
        self.output_files: dict[str, str] = {}
        self.tails: dict[str, collections.deque] = {}
        self.failed: list[str] = []

    def feed(self, raw: str) -> None:
        line = _ANSI.sub("", raw.rstrip("\n"))
        if match := _STARTED.search(line):
            self.current = match.group(1)
            self.started[self.current] = time.monotonic()
            self.tails[self.current] = collections.deque(maxlen=FAILURE_TAIL)
            return
        if match := _FINISHED.search(line):
            task, status = match.groups()
            seconds = time.monotonic() - self.started.get(task, time.monotonic())
            detail = ""
            if status == "SUCCESS":
                with contextlib.suppress(OSError, ValueError, KeyError):
                    detail = key_output(json.loads(Path(self.output_files[task]).read_text()))
            else:
                self.failed.append(task)
            display = self.display_names.get(task, "")
            label = f"{task} ({display})" if display and display != task else task
            self.console(f"  {label:<48} {status:<8} {seconds:7.1f} s  {detail}".rstrip())
            self.current = None
            return
        if self.current is not None:
            if match := _OUTPUT_FILE.search(line):
                self.output_files.setdefault(self.current, match.group(1))
            if line.strip():
                self.tails[self.current].append(line[4:] if line.startswith("    ") else line)


def _console() -> tuple[Callable[[str], None], Callable[[], None]]:
    """(write a line, close) to this process's standard output as it is before any redirection:
    the terminal's fd 1 (duplicated, since fd 1 is about to be redirected), or a replaced
    ``sys.stdout`` (pytest's capture) as it is."""
    try:
        real = sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):
        real = False
    stream = open(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace") if real else sys.stdout

    def write(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    return write, (stream.close if real else (lambda: None))


@contextlib.contextmanager
def _captured(log_path: Path, on_line: Callable[[str], None]) -> Iterator[None]:
    """Send everything written to fd 1 and 2 (and ``sys.stdout``/``sys.stderr``) into
    ``log_path``, passing each line to ``on_line``, until the block ends.

    kfp.local prints its own logs and streams each task's output (a subprocess's pipe, or a
    container's logs) with ``print``: redirecting the file descriptors catches every writer.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    read_fd, write_fd = os.pipe()

    def pump() -> None:
        with open(read_fd, "rb") as pipe, log_path.open("wb") as log:
            for raw in pipe:
                log.write(raw)
                log.flush()
                try:
                    on_line(raw.decode("utf-8", errors="replace"))
                except Exception as exc:  # noqa: BLE001 - a console hiccup must not stall the pipe
                    log.write(f"[vsearch: progress line failed: {exc!r}]\n".encode())

    thread = threading.Thread(target=pump, name="kfp-local-log", daemon=True)
    thread.start()
    os.dup2(write_fd, 1)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    stream = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield
    finally:
        stream.flush()
        os.dup2(saved[0], 1)  # the pipe's last writer goes: the pump reads to the end
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        thread.join(timeout=30)


def _run_container(client, image: str, command: list[str], volumes: dict, **run_args) -> int:
    """Run one task's container and return its real exit code.

    Replaces ``kfp.local.docker_task_handler.run_docker_container`` while a container run is
    on: kfp's own starts the container with ``auto_remove=True`` and, when the container is
    already gone at ``wait()`` (podman removes it at once), assumes exit code 0, so a failed
    task was reported SUCCESS (seen here: a step that died on an ImportError passed, and the
    exit handler said SUCCEEDED). Here the container is kept until its code is read, then
    removed. Nothing is pulled: the images are built locally (``make images``).
    """
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise RuntimeError(f"image {image!r} is not in the local store: build it (make images) or pull it first") from None
    container = client.containers.run(image=image, command=command, detach=True, stdout=True, stderr=True,
                                      volumes=volumes, auto_remove=False, **run_args)
    try:
        for line in container.logs(stream=True, follow=True):
            print(line.decode(errors="replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)


@contextlib.contextmanager
def _exact_container_exit_codes() -> Iterator[None]:
    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = _run_container
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original


@contextlib.contextmanager
def _warm_tasks(workdir: str) -> Iterator[None]:
    """Run kfp.local's subprocess tasks through a ``pipelines.task_server`` (torch, transformers,
    pandas imported once, a fork per task) instead of a fresh interpreter each; a task the server
    does not take runs as kfp.local would run it."""
    from kfp.local import subprocess_task_handler

    original = subprocess_task_handler.run_local_subprocess

    def run(full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        request = task_server.task_request(full_command)
        if request is not None:
            env = {**os.environ, **(env_vars or {}), "_KFP_RUNTIME": "true"}
            code = task_server.run_task(path, request, env, lambda line: print(line, end=""))
            if code is not None:
                print("\n")  # as kfp.local ends a task's output
                return code
        return original(full_command, env_vars)

    with task_server.serving(workdir) as path:
        subprocess_task_handler.run_local_subprocess = run
        try:
            yield
        finally:
            subprocess_task_handler.run_local_subprocess = original


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
    warm: bool = True,
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
        return run_package(package, out, params, expect, name=name, runner=runner, docker_host=docker_host, warm=warm)
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
    warm: bool = True,
) -> dict:
    """Run a compiled package with kfp.local; check that the tasks that must run did.

    The console gets one line per task (name, status, seconds, key output); everything kfp.local
    and the tasks print goes to ``<run folder>/executor.log``.

    Args:
        package: compiled pipeline YAML.
        out: pipeline root; the run gets ``<out>/<pipeline>-<timestamp>/``.
        params: pipeline parameters.
        expect: task names (``train-model-2``) or display names that this run must execute
            besides the unconditional ones, e.g. the tasks of the branch it should take.
        runner: ``subprocess`` (this venv) or ``container`` (each task in its compiled image,
            through the Docker API at ``docker_host``).
        warm: with the subprocess runner, fork each task from a process that has imported
            torch, transformers and pandas already (``pipelines.task_server``: the same
            command, inputs and environment, seconds less per task); False: a fresh
            interpreter per task, as kfp.local does.

    Returns:
        The run.json manifest.

    Raises:
        RuntimeError: a task failed (the message carries its last log lines and the log's
            path), or a task that had to run left no executor output.
    """
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
    before = {p.name for p in out.iterdir()}
    started = time.perf_counter()
    log = out / f".{LOG_FILE}-{os.getpid()}-{time.time_ns()}"
    try:
        result, failure, tails = _run_pipeline(package, out, params, runner, docker_host, log, every, warm)
        seconds = time.perf_counter() - started
        new = sorted(p for p in out.iterdir() if p.name not in before and p.is_dir() and not p.name.startswith("."))
        if len(new) != 1:
            raise RuntimeError(f"{out}: expected one new run folder from kfp.local, found {[p.name for p in new]}"
                               + (f"\n{failure}{tails}" if failure else ""))
        run_dir = new[0]
        log = Path(shutil.move(log, run_dir / LOG_FILE))
    finally:
        if log.name.startswith(".") and log.exists():  # no run folder to keep it in: keep it beside them
            log.replace(out / f"{spec['pipelineInfo']['name']}-{time.strftime('%Y%m%d-%H%M%S')}-{LOG_FILE}")
    if failure:
        raise RuntimeError(f"{run_dir}: {failure} The full log: {log}{tails}")
    shutil.copyfile(package, run_dir / PACKAGE_FILE)
    manifest = {
        "pipeline": name or spec["pipelineInfo"]["name"],
        "pipeline_name": spec["pipelineInfo"]["name"],
        "run_dir": str(run_dir),
        "package": str(run_dir / PACKAGE_FILE),
        "log": str(log),
        "params": params or {},
        "runner": runner,
        "seconds": round(seconds, 1),
        # The pipeline's own outputs (e.g. the monitoring pipeline's "retraining due").
        "outputs": _plain(getattr(result, "outputs", None) or {}),
        "required_tasks": required,
        "tasks": _task_records(run_dir, every),
    }
    (run_dir / RUN_FILE).write_text(json.dumps(manifest, indent=2))
    missing = sorted(set(required) - {key.rsplit("/", 1)[-1] for key in manifest["tasks"]})
    if missing:
        raise RuntimeError(
            f"{run_dir}: kfp.local reported success but task(s) {missing} did not run "
            f"({', '.join(required[m] for m in missing)})"
        )
    return manifest


def _run_pipeline(package, out: Path, params: dict | None, runner: str, docker_host: str | None,
                  log: Path, display_names: dict[str, str], warm: bool = True) -> tuple[Any, str, str]:
    """Run the package under kfp.local with its output in ``log``: (the pipeline's result,
    kfp.local's failure message, the failed tasks' last log lines; "" and "" on success)."""
    from kfp import local
    from kfp.components import load_component_from_file

    pipeline = load_component_from_file(str(package))
    # kfp.local deletes its workspace_root afterwards: give it a folder of its own.
    workspace = tempfile.mkdtemp(prefix="vsearch-kfp-workspace-")
    chosen = _runner(runner, docker_host)
    if runner == "container":
        # Tasks run as the image's non-root user and write into the pipeline root, which is
        # bind-mounted at the same path (DockerRunner); a cluster's object store is writable too.
        for folder in (out, Path(workspace)):
            folder.chmod(0o1777)
    local.init(runner=chosen, pipeline_root=str(out), workspace_root=workspace)
    previous_host = os.environ.get("DOCKER_HOST")
    if docker_host:
        os.environ["DOCKER_HOST"] = docker_host  # DockerRunner calls docker.from_env()
    console, close_console = _console()
    lines = _TaskLines(console, display_names)
    result, failure = None, ""
    try:
        if runner == "container":
            exact = _exact_container_exit_codes()
        else:  # (the server starts before the capture: its own output is not the run's)
            exact = _warm_tasks(workspace) if warm else contextlib.nullcontext()
        with exact, _captured(log, lines.feed), warnings.catch_warnings():
            # One warning per task that GPUs, secrets and display names are not applied
            # locally: expected, and said once in the module docstring.
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
            try:
                result = pipeline(**(params or {}))
            except RuntimeError as err:
                failure = _ANSI.sub("", str(err))
    finally:
        close_console()
        if docker_host:
            if previous_host is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = previous_host
        shutil.rmtree(workspace, ignore_errors=True)
    tails = ""
    for task in lines.failed:
        tail = "\n".join(f"    {line}" for line in lines.tails.get(task, ()))
        tails += f"\n  task '{task}' failed; its last {FAILURE_TAIL} log lines:\n{tail}"
    return result, failure, tails


def _task_records(run_dir: Path, every: dict[str, str]) -> dict[str, Any]:
    """{task key: display name, outputs (URIs and metadata), parameters} from the executor outputs.

    Tasks inside dsl.ParallelFor run in <loop>-iteration-<i>/<task>/: recorded as "<loop>-iteration-<i>/<task>".
    """
    tasks: dict[str, Any] = {}
    task_dirs = sorted(p for p in run_dir.iterdir() if (p / EXECUTOR_OUTPUT).is_file())
    task_dirs += sorted(p for p in run_dir.glob("*-iteration-*/*") if (p / EXECUTOR_OUTPUT).is_file())
    for task_dir in task_dirs:
        outputs = json.loads((task_dir / EXECUTOR_OUTPUT).read_text())
        tasks[task_dir.relative_to(run_dir).as_posix()] = {
            "display_name": every.get(task_dir.name, task_dir.name),
            "outputs": {
                key: [{"uri": a["uri"], "metadata": a.get("metadata", {})} for a in value.get("artifacts", [])]
                for key, value in sorted(outputs.get("artifacts", {}).items())
            },
            "parameters": outputs.get("parameterValues", {}),
        }
    return tasks
