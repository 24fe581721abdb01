"""The ``train_model`` step's distributed path: settings -> a named spec -> a job that
trains through the shared PVC -> the published model in the step's output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

from vsearch import artifacts, model_folder
from vsearch.config import ConfigError
from vsearch.training.trainjob.client import TrainJobError, submit_and_wait
from vsearch.training.trainjob.manifest import build_manifest
from vsearch.training.trainjob.spec import TrainJobSpec, derive_name

ENV_VAR = "VSEARCH_TRAINJOB"
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def run_distributed(
    spec: TrainJobSpec,
    *,
    config: str,
    overrides: list[str],
    data_dir: str,
    out_dir: str,
    workdir: str,
    init: str | None = None,
    api=None,
    poll_s: float = 30.0,
    timeout_s: float = 48 * 3600.0,
    delete_on_timeout: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train on ``spec.num_nodes`` nodes through the shared volume and publish to ``out_dir``.

    ``workdir`` is a folder on the shared ReadWriteMany PVC, mounted at the same path here
    and in every node. The dataset (and init model) are copied to ``<workdir>/<job>/``, the
    job trains into ``<workdir>/<job>/model`` (resuming from its checkpoints if a node
    restarts), and the published model is copied to ``out_dir``; the run folder is removed
    once the model is out. Returns the training summary (``train_summary.json``).
    """
    run = Path(workdir) / spec.name
    run.mkdir(parents=True, exist_ok=True)
    data = _copy_in(Path(data_dir), run / "data")
    init_copy = _copy_in(Path(init), run / "init") if init is not None else None
    model = run / "model"
    train_args = ["--config", config, "--data", str(data), "--out", str(model), "--quiet"]
    if init_copy is not None:
        train_args += ["--init", str(init_copy)]
    train_args += list(overrides)
    manifest = build_manifest(spec, train_args)
    submit_and_wait(manifest, api=api, poll_s=poll_s, timeout_s=timeout_s, delete_on_timeout=delete_on_timeout, log=log)
    if not (model / model_folder.WEIGHTS_FILE).is_file():
        raise TrainJobError(f"{manifest['kind']} {spec.namespace}/{spec.name} completed but published no model at {model}")
    with artifacts.staged(out_dir) as staging:
        shutil.copytree(model, staging, dirs_exist_ok=True)
    summary = json.loads((Path(out_dir) / model_folder.SUMMARY_FILE).read_text())
    shutil.rmtree(run, ignore_errors=True)
    return summary



def launch(
    settings: str | dict,
    *,
    config: str,
    overrides: list[str],
    data_dir: str,
    out_dir: str,
    run_id: str,
    init: str | None = None,
    api=None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """The ``train_model`` step's distributed path: ``settings`` (JSON from the pipeline config,
    env ``VSEARCH_TRAINJOB``) -> a named, validated spec -> ``run_distributed``.

    ``settings`` = ``{"spec": {TrainJobSpec fields}, "workdir": folder on the shared PVC,
    "poll_seconds", "timeout_seconds", "delete_on_timeout"}``. The job name is derived from
    the config name and ``run_id`` (the output artifact's URI: one job per task, the same job
    again when KFP retries the step). An empty namespace means the step's own namespace.
    """
    from vsearch.config import load_config

    raw = json.loads(settings) if isinstance(settings, str) else dict(settings)
    where = f"{ENV_VAR}"
    unknown = sorted(set(raw) - {"spec", "workdir", "poll_seconds", "timeout_seconds", "delete_on_timeout"})
    if unknown or "spec" not in raw or not raw.get("workdir"):
        raise ConfigError(f"{where}: expected keys spec, workdir (+ poll_seconds, timeout_seconds, "
                          f"delete_on_timeout); unknown {unknown}")
    spec = TrainJobSpec.from_dict(raw["spec"], where=f"{where}.spec")
    cfg = load_config(config, list(overrides))
    world = spec.num_nodes * spec.nproc_per_node
    if cfg.data.batch_size % world:
        raise ConfigError(f"{where}: data.batch_size {cfg.data.batch_size} (the global batch) must be divisible by "
                          f"num_nodes x nproc_per_node = {world}")
    spec.name = spec.name or derive_name(cfg.name, config, list(overrides), run_id)
    if not spec.namespace:
        ns_file = Path(SA_NAMESPACE_FILE)
        if not ns_file.is_file():
            raise ConfigError(f"{where}: spec.namespace is empty and {ns_file} does not exist (not in a pod): "
                              "set trainjob.namespace in the pipeline config")
        spec.namespace = ns_file.read_text().strip()
    return run_distributed(
        spec, config=config, overrides=list(overrides), data_dir=data_dir, out_dir=out_dir, workdir=raw["workdir"],
        init=init, api=api, poll_s=float(raw.get("poll_seconds", 30)), timeout_s=float(raw.get("timeout_seconds", 48 * 3600)),
        delete_on_timeout=bool(raw.get("delete_on_timeout", True)), log=log,
    )


def _copy_in(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` once (staging + rename), so a retried step reuses a whole copy."""
    if dst.is_dir():
        return dst
    if not src.is_dir():
        raise ConfigError(f"{src}: input folder not found")
    with artifacts.staged(dst) as staging:
        shutil.copytree(src, staging, dirs_exist_ok=True)
    return dst
