"""Applying the compile-time config to pipeline tasks: one function, used by every DAG.

Kubernetes concerns stay out of the components: display names, image override, caching,
retries, CPU/memory requests, accelerators (type, count, limits, node selector, tolerations,
a memory-backed /dev/shm, the GPU image, ``VSEARCH_REQUIRE_CUDA``) and Secrets as environment
variables are all set here, per step, from ``PipelineConfig``.
"""

from __future__ import annotations

import functools
import inspect
from typing import List

from components.image import IMAGE
from pipelines.config import PipelineConfig
from vsearch.training.device import REQUIRE_CUDA_ENV


def step_name(task) -> str:
    """The component's function name (``train_model``) for a task."""
    return task.component_spec.name.replace("-", "_")


def configure(task, display_name: str, cfg: PipelineConfig):
    """Set display name, image, caching, retries, GPU and secrets of ``task``; returns it."""
    from kfp import kubernetes

    step = step_name(task)
    task.set_display_name(display_name)
    if cfg.image != IMAGE:
        task.set_container_image(cfg.image)
    task.set_caching_options(enable_caching=cfg.caching and step not in cfg.no_cache_steps)
    cpu, memory = cfg.resources.request(step)
    task.set_cpu_request(cpu).set_memory_request(memory)
    if step in cfg.retry.steps and cfg.retry.num_retries > 0:
        task.set_retry(
            num_retries=cfg.retry.num_retries,
            backoff_duration=cfg.retry.backoff_duration,
            backoff_factor=cfg.retry.backoff_factor,
            backoff_max_duration=cfg.retry.backoff_max_duration,
        )
    gpu = cfg.gpu
    # A step that launches a TrainJob only waits for it: the job's nodes get the GPUs.
    if gpu.enabled and step in gpu.steps and not cfg.launches_trainjob(step):
        task.set_accelerator_type(gpu.accelerator_type).set_accelerator_limit(gpu.accelerator_limit)
        # CUDA torch for a step that holds a GPU, and a step that finds no CUDA stops at once
        # (vsearch.training.device.require_cuda) instead of training on the CPU beside it.
        task.set_container_image(cfg.gpu_image)
        task.set_env_variable(REQUIRE_CUDA_ENV, "1")
        if gpu.cpu_limit:
            task.set_cpu_limit(gpu.cpu_limit)
        if gpu.memory_limit:
            task.set_memory_limit(gpu.memory_limit)
        if gpu.shm_size:
            kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=gpu.shm_size)
        for key, value in sorted(gpu.node_selector.items()):
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for t in gpu.tolerations:
            kubernetes.add_toleration(
                task,
                key=t.key or None,
                operator=t.operator,
                value=t.value or None,
                effect=t.effect or None,
                toleration_seconds=t.toleration_seconds,
            )
    if cfg.launches_trainjob(step):
        from pipelines.config import trainjob_settings
        from vsearch.training.trainjob import ENV_VAR

        kubernetes.mount_pvc(task, pvc_name=cfg.trainjob.pvc, mount_path=cfg.trainjob.mount_path)
        task.set_env_variable(ENV_VAR, trainjob_settings(cfg, step))
    for secret in cfg.secrets_for(step):
        kubernetes.use_secret_as_env(
            task, secret_name=secret.name, secret_key_to_env=dict(sorted(secret.env.items())), optional=secret.optional
        )
    return task


REQUIRED = inspect.Parameter.empty
# Pipeline parameter groups, (name, annotation, default) each: the model and training pipelines
# come in two entry points (generate the benchmark, or import a dataset) that share the rest.
SYNTH_PARAMS = (("preset", str, "default"), ("seed", int, 0))
IMPORT_PARAMS = (("data_uri", str, REQUIRED),)
MODEL_PARAMS = (("image_only_config", str, "image_only"), ("three_tower_config", str, "three_tower"),
                ("four_tower_config", str, "four_tower"), ("train_overrides", List[str], []), ("eval_overrides", List[str], []))


def with_parameters(*groups):
    """Decorator: give a pipeline body ``body(**params)`` the signature KFP reads, the
    parameters of ``groups`` in order (``REQUIRED``: no default). KFP calls a pipeline function
    with positional arguments; they reach the body by name."""
    signature = inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation,
                                                     default=default)
                                   for group in groups for name, annotation, default in group])

    def decorate(body):
        @functools.wraps(body)
        def pipeline_func(*args, **kwargs):
            return body(**signature.bind(*args, **kwargs).arguments)

        pipeline_func.__signature__ = signature
        return pipeline_func

    return decorate


def source_data(params: dict, cfg: PipelineConfig):
    """The pipeline's dataset: the import of ``data_uri`` (``IMPORT_PARAMS``), or the benchmark
    generated from ``preset`` and ``seed`` (``SYNTH_PARAMS``)."""
    if "data_uri" in params:
        return import_dataset(params["data_uri"], cfg).output
    from components.synth_data import synth_data

    synth = configure(synth_data(preset=params["preset"], seed=params["seed"]), "Generate street-to-shop benchmark", cfg)
    return synth.outputs["data"]


def import_artifact(uri, artifact_class, display_name: str, **metadata):
    """A ``dsl.importer`` task of ``uri`` (a pipeline parameter) as ``artifact_class``."""
    from kfp import dsl

    task = dsl.importer(artifact_uri=uri, artifact_class=artifact_class, reimport=False, metadata=metadata or None)
    task.set_display_name(display_name)
    return task


def import_dataset(data_uri, cfg: PipelineConfig):
    """Import the dataset at ``data_uri`` so that the cache follows its content; returns the importer task.

    The URI of a recurring run stays the same (``s3://.../latest``), and KFP's cache key
    follows artifact identity, not content: an uncached ``fingerprint_data`` step puts the
    manifests' fingerprint into the imported artifact's metadata, so a changed dataset is a
    new artifact (everything after it runs again) and an unchanged one hits the cache.
    """
    from kfp.dsl import Dataset

    from components.fingerprint_data import fingerprint_data

    fingerprint = configure(fingerprint_data(data_uri=data_uri), "Fingerprint dataset", cfg)
    return import_artifact(data_uri, Dataset, "Import dataset", fingerprint=fingerprint.output)


def notify_on_exit(pipeline_name: str, cfg: PipelineConfig):
    """``with notify_on_exit(NAME, cfg):`` around a pipeline's body: ``notify_run`` runs after it,
    whatever happened, records the final status and posts a failure where a webhook is configured."""
    from kfp import dsl

    from components.notify_run import notify_run

    task = configure(notify_run(pipeline=pipeline_name), "Record run status (notify on failure)", cfg)
    return dsl.ExitHandler(task, name="Run (status recorded on exit)")
