"""Compile-time pipeline configuration: image, GPUs, secrets, retries, caching.

Everything Kubernetes-specific about a compiled pipeline lives here, not in the components
or the package: which steps get an accelerator (type, count, node selector, tolerations,
CPU/memory limits), which Kubernetes Secrets become environment variables of which steps,
which steps retry, and which never use the cache. Steps are named by their component
(``train_model``, ``evaluate_model`` ...), so one config serves every pipeline.

The defaults below are the built-in config. A YAML file (``--config FILE``, same keys,
unknown keys rejected) and dotted overrides (``gpu.accelerator_limit=2``) change it. The
environment is never read: the same inputs always compile to the same YAML.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from components.image import GPU_IMAGE, IMAGE
from vsearch.config import ConfigError, apply_overrides, build_typed, deep_merge, read_config
from vsearch.training.trainjob import SecretEnv as SecretKeyEnv
from vsearch.training.trainjob import Toleration, is_env_name, validate_tolerations  # one definition for pipeline steps and TrainJob pods
from vsearch.training.device import REQUIRE_CUDA_ENV


@dataclass
class GpuConfig:
    """Accelerators for GPU steps."""

    enabled: bool = True
    steps: list[str] = field(default_factory=lambda: ["train_model", "embed_shard"])
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_limit: int = 1
    cpu_limit: str = "8"
    memory_limit: str = "32G"
    node_selector: dict[str, str] = field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    tolerations: list[Toleration] = field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]
    )
    # DataLoader workers pass batches through shared memory; a container's default /dev/shm is 64 MB.
    shm_size: str = "8Gi"


@dataclass
class ResourcesConfig:
    """CPU/memory *requests* of every step (a step without requests is a BestEffort pod, the
    first one evicted). ``steps`` overrides the default per step; GPU steps also get ``gpu``'s limits."""

    cpu_request: str = "1"
    memory_request: str = "2G"
    steps: dict[str, dict[str, str]] = field(default_factory=lambda: {
        "train_model": {"cpu": "4", "memory": "16G"},
        "evaluate_model": {"cpu": "2", "memory": "8G"},
        "embed_shard": {"cpu": "4", "memory": "16G"},
        "backfill_embeddings": {"cpu": "2", "memory": "8G"},
        "index_embeddings": {"cpu": "2", "memory": "8G"},
        "build_drift_reference": {"cpu": "2", "memory": "4G"},
        "detect_drift": {"cpu": "2", "memory": "4G"},
    })
    shard_parallelism: int = 8  # embed_shard tasks at once (dsl.ParallelFor parallelism)

    def request(self, step: str) -> tuple[str, str]:
        own = self.steps.get(step, {})
        return str(own.get("cpu", self.cpu_request)), str(own.get("memory", self.memory_request))


@dataclass
class SecretEnv:
    """A Kubernetes Secret whose keys become environment variables of some steps."""

    name: str
    env: dict[str, str]  # secret key -> environment variable
    steps: list[str] = field(default_factory=list)
    optional: bool = False

    def variables(self) -> list[SecretKeyEnv]:
        """One variable per key, by key: how a TrainJob spec lists them (``secret_env``)."""
        return [SecretKeyEnv(name=var, secret=self.name, key=key, optional=self.optional)
                for key, var in sorted(self.env.items())]


@dataclass
class RetryConfig:
    """Retries of transient steps (pre-emptible GPU nodes, object-store hiccups)."""

    steps: list[str] = field(
        default_factory=lambda: ["synth_data", "train_model", "build_drift_reference", "evaluate_model", "embed_shard",
                                 "backfill_embeddings", "index_embeddings"]
    )
    num_retries: int = 2
    backoff_duration: str = "60s"
    backoff_factor: float = 2.0
    backoff_max_duration: str = "3600s"


@dataclass
class TrainJobConfig:
    """Multi-node training: ``train_model`` launches a Kubeflow TrainJob and waits for it.

    Off by default (the step trains in-process). When enabled, the step itself needs no GPU:
    the TrainJob's nodes get ``gpu``'s accelerators, CPU/memory limits, node selector and
    tolerations, the step's Secrets as ``secretKeyRef`` env, and the shared ReadWriteMany
    ``pvc`` (mounted at ``mount_path`` in the step and in every node) through which the
    dataset goes in and the model comes out. docs/trainjob.md.
    """

    enabled: bool = False
    steps: list[str] = field(default_factory=lambda: ["train_model"])
    flavour: str = "trainjob"  # trainjob (Kubeflow Trainer v2) | pytorchjob (training-operator v1)
    num_nodes: int = 2
    nproc_per_node: int = 0  # 0: gpu.accelerator_limit (one process per GPU), 1 without GPUs
    runtime: str = "torch-distributed"
    runtime_kind: str = "ClusterTrainingRuntime"
    namespace: str = ""  # "": the pipeline run's own namespace
    service_account: str = ""
    image: str = ""  # "": the pipeline image
    pvc: str = "vsearch-shared"
    mount_path: str = "/mnt/vsearch"
    shm_size: str = "16Gi"
    poll_seconds: int = 30
    timeout_seconds: int = 172800
    delete_on_timeout: bool = True


# Steps that read the outside world (the champion, the live index, recent logs) or change it
# (Milvus collections and aliases, the online feature store, a webhook): their result must
# never come from the cache.
LOOKUP_STEPS = ["fingerprint_data", "build_training_set", "detect_drift", "gate_model", "backfill_embeddings",
                "index_embeddings", "write_rollout_config", "trigger_retraining", "materialize_features", "notify_run"]

# Steps that read data or models from object storage.
DATA_STEPS = ["synth_data", "fingerprint_data", "validate_data", "build_training_set", "train_model", "build_drift_reference",
              "evaluate_model", "gate_model", "detect_drift", "embed_shard", "backfill_embeddings", "index_embeddings", "write_rollout_config"]


@dataclass
class PipelineConfig:
    image: str = IMAGE  # every step without an accelerator (CPU torch)
    gpu_image: str = GPU_IMAGE  # every step given an accelerator (CUDA torch); override both for a registry
    caching: bool = True
    no_cache_steps: list[str] = field(default_factory=lambda: list(LOOKUP_STEPS))
    gpu: GpuConfig = field(default_factory=GpuConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    trainjob: TrainJobConfig = field(default_factory=TrainJobConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    secrets: list[SecretEnv] = field(
        default_factory=lambda: [
            # Object-store credentials for data and models on s3:// (fsspec reads AWS_*).
            SecretEnv(
                name="vsearch-object-store",
                env={"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"},
                steps=list(DATA_STEPS),
                optional=True,
            ),
            # The Milvus cluster's token for the indexing steps (the URI is a pipeline
            # parameter); vsearch.indexing reads it from VSEARCH_MILVUS_TOKEN (configs/index.yaml).
            SecretEnv(
                name="milvus-credentials",
                env={"token": "VSEARCH_MILVUS_TOKEN"},
                steps=["backfill_embeddings", "index_embeddings"],
            ),
            # The cluster's Feast registry and online store (its connection string carries the
            # Redis password) for materialize_features; without it the step says it skipped.
            SecretEnv(
                name="vsearch-feast",
                env={"registry": "VSEARCH_FEAST_REGISTRY", "online_store": "VSEARCH_FEAST_ONLINE_STORE"},
                steps=["materialize_features"],
                optional=True,
            ),
            # Where notify_run posts a failed run (a chat webhook URL is a credential); none: no post.
            SecretEnv(name="vsearch-notify", env={"webhook_url": "VSEARCH_NOTIFY_WEBHOOK"}, steps=["notify_run"],
                      optional=True),
        ]
    )

    def secrets_for(self, step: str) -> list[SecretEnv]:
        return [s for s in self.secrets if step in s.steps]

    def launches_trainjob(self, step: str) -> bool:
        return self.trainjob.enabled and step in self.trainjob.steps


def _training_image(cfg: PipelineConfig) -> str:
    """The TrainJob nodes' image: ``gpu_image`` when they get accelerators, else ``image``."""
    return cfg.gpu_image if cfg.gpu.enabled else cfg.image


def trainjob_settings(cfg: PipelineConfig, step: str = "train_model") -> str:
    """The ``VSEARCH_TRAINJOB`` value of a launching step: JSON read by ``vsearch.training.trainjob.launch``."""
    tj, gpu = cfg.trainjob, cfg.gpu
    accelerators = gpu.accelerator_limit if gpu.enabled else 0
    spec = {
        "namespace": tj.namespace,
        "image": tj.image or _training_image(cfg),
        "flavour": tj.flavour,
        "num_nodes": tj.num_nodes,
        "nproc_per_node": tj.nproc_per_node or max(accelerators, 1),
        "cpu": gpu.cpu_limit,
        "memory": gpu.memory_limit,
        "accelerator_type": gpu.accelerator_type,
        "accelerator_count": accelerators,
        "tolerations": [dataclasses.asdict(t) for t in gpu.tolerations] if gpu.enabled else [],
        "node_selector": dict(sorted(gpu.node_selector.items())) if gpu.enabled else {},
        "volumes": [{"name": "vsearch-shared", "pvc": tj.pvc}],
        "mounts": [{"volume": "vsearch-shared", "path": tj.mount_path}],
        "shm_size": tj.shm_size,
        # Nodes holding GPUs stop at once without CUDA, like the pipeline's GPU steps (pipelines.wiring).
        "env": {REQUIRE_CUDA_ENV: "1"} if accelerators else {},
        "secret_env": [dataclasses.asdict(v) for s in cfg.secrets_for(step) for v in s.variables()],
        "service_account": tj.service_account,
        "runtime": tj.runtime,
        "runtime_kind": tj.runtime_kind,
    }
    settings = {
        "spec": spec,
        "workdir": f"{tj.mount_path.rstrip('/')}/trainjobs",
        "poll_seconds": tj.poll_seconds,
        "timeout_seconds": tj.timeout_seconds,
        "delete_on_timeout": tj.delete_on_timeout,
    }
    return json.dumps(settings, sort_keys=True)


def validate(cfg: PipelineConfig, where: str = "pipeline config") -> None:
    for key in ("image", "gpu_image"):
        value = getattr(cfg, key)
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise ConfigError(f"{where}: {key} must be a non-empty image reference, got {value!r}")
    if not isinstance(cfg.gpu.accelerator_limit, int) or cfg.gpu.accelerator_limit < 1:
        raise ConfigError(f"{where}: gpu.accelerator_limit must be an integer >= 1")
    validate_tolerations(cfg.gpu.tolerations, f"{where}: gpu")
    if cfg.trainjob.enabled:
        _validate_trainjob(cfg, where)
    if not isinstance(cfg.resources.shard_parallelism, int) or cfg.resources.shard_parallelism < 1:
        raise ConfigError(f"{where}: resources.shard_parallelism must be an integer >= 1")
    if not isinstance(cfg.resources.steps, dict) or any(not isinstance(v, dict) or set(v) - {"cpu", "memory"}
                                                        for v in cfg.resources.steps.values()):
        raise ConfigError(f"{where}: resources.steps maps a step to {{cpu, memory}}")
    if not isinstance(cfg.retry.num_retries, int) or cfg.retry.num_retries < 0:
        raise ConfigError(f"{where}: retry.num_retries must be an integer >= 0")
    for s in cfg.secrets:
        if not s.name or not s.env:
            raise ConfigError(f"{where}: every secret needs a name and an env mapping")
        for var in s.env.values():
            if not is_env_name(str(var)):
                raise ConfigError(f"{where}: secret '{s.name}': {var!r} is not an environment variable name")


def _validate_trainjob(cfg: PipelineConfig, where: str) -> None:
    """Every TrainJob rule (names, counts, volumes, env), checked at compile time."""
    from vsearch.training.trainjob import TrainJobSpec, validate as validate_spec

    tj = cfg.trainjob
    if not tj.pvc or not tj.mount_path.startswith("/"):
        raise ConfigError(f"{where}: trainjob needs a ReadWriteMany pvc and an absolute mount_path")
    if not isinstance(tj.poll_seconds, int) or tj.poll_seconds < 1 or not isinstance(tj.timeout_seconds, int) or tj.timeout_seconds < 1:
        raise ConfigError(f"{where}: trainjob.poll_seconds and trainjob.timeout_seconds must be integers >= 1")
    spec = TrainJobSpec.from_dict(json.loads(trainjob_settings(cfg))["spec"], where=f"{where}: trainjob")
    spec.name, spec.namespace = "compile-check", spec.namespace or "default"
    validate_spec(spec, where=f"{where}: trainjob")


def load_pipeline_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """The built-in config, updated by a YAML file (optional; merged by `vsearch.config.deep_merge`:
    sections key by key at every depth, lists, scalars and plain mappings such as
    ``gpu.node_selector`` replace) and dotted overrides; typed and checked by `vsearch.config`'s
    loader (unknown keys and wrong types: one line naming the file and the key)."""
    raw = dataclasses.asdict(PipelineConfig())
    where = "pipeline config"
    if path is not None:
        where = str(path)
        if not Path(path).is_file():
            raise ConfigError(f"{where}: pipeline config file not found")
        raw = deep_merge(raw, read_config(path, PipelineConfig), PipelineConfig)
    cfg = build_typed(PipelineConfig, apply_overrides(raw, list(overrides)), where)
    validate(cfg, where)
    return cfg
