"""The TrainJob settings (``TrainJobSpec`` and its parts), the API coordinates, naming and
validation: everything the cluster would refuse is refused here, naming the field."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vsearch.config import ConfigError

TRAINER_GROUP, TRAINER_VERSION, TRAINJOB_PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
PYTORCH_GROUP, PYTORCH_VERSION, PYTORCHJOB_PLURAL = "kubeflow.org", "v1", "pytorchjobs"
FLAVOURS = ("trainjob", "pytorchjob")
# The Trainer torch plugin rejects user env that collides with what it injects for torchrun.
RESERVED_ENV_PREFIX = "PET_"

# RFC 1035 label: the TrainJob CRD's own rule for metadata.name (x-kubernetes-validations).
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_TAINT_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass
class Toleration:
    """A Kubernetes toleration (training pods here; pipeline steps via kfp.kubernetes.add_toleration)."""

    key: str = ""
    operator: str = "Equal"  # Equal | Exists
    value: str = ""
    effect: str = ""  # NoSchedule | PreferNoSchedule | NoExecute | "" (all)
    toleration_seconds: int | None = None


def validate_tolerations(tolerations: list[Toleration], where: str) -> None:
    """ConfigError for a toleration Kubernetes would refuse (TrainJob pods and pipeline steps)."""
    for i, t in enumerate(tolerations):
        if t.operator not in ("Equal", "Exists"):
            raise ConfigError(f"{where}: tolerations[{i}]: operator must be Equal or Exists, got {t.operator!r}")
        if t.effect not in _TAINT_EFFECTS:
            raise ConfigError(f"{where}: tolerations[{i}]: effect {t.effect!r} is not a taint effect")
        if t.operator == "Exists" and t.value:
            raise ConfigError(f"{where}: tolerations[{i}]: operator Exists takes no value")
        if not t.key and t.operator != "Exists":
            raise ConfigError(f"{where}: tolerations[{i}]: an empty key needs operator Exists")


@dataclass
class Volume:
    """A Pod volume: a PersistentVolumeClaim (``pvc``) or, when ``pvc`` is empty, an emptyDir."""

    name: str
    pvc: str = ""
    read_only: bool = False  # PVC only
    medium: str = ""  # emptyDir only: "" (node disk) | "Memory" (tmpfs, e.g. /dev/shm)
    size_limit: str = ""  # emptyDir only, a quantity ("16Gi")


@dataclass
class VolumeMount:
    """Where the trainer container sees a volume."""

    volume: str
    path: str
    read_only: bool = False


@dataclass
class SecretEnv:
    """An environment variable taken from a Kubernetes Secret key (never a value): the shape of a
    container's ``env[].valueFrom.secretKeyRef``. The pipeline config's ``SecretEnv`` (one Secret,
    several keys, the steps that get them) turns into these with ``variables()``."""

    name: str  # environment variable
    secret: str
    key: str
    optional: bool = False


@dataclass
class TrainJobSpec:
    """Everything about a multi-node training job except what to train (``train_args``).

    Resources are per node: ``cpu`` / ``memory`` limits and ``accelerator_count`` devices of
    ``accelerator_type``; ``nproc_per_node`` processes per node, one per accelerator.
    """

    name: str = ""
    namespace: str = "kubeflow"
    image: str = ""
    flavour: str = "trainjob"  # trainjob (Kubeflow Trainer v2) | pytorchjob (training-operator v1)
    num_nodes: int = 2
    nproc_per_node: int = 1
    cpu: str = "8"
    memory: str = "32Gi"
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_count: int = 1  # 0: CPU-only nodes
    tolerations: list[Toleration] = field(default_factory=list)
    node_selector: dict[str, str] = field(default_factory=dict)
    volumes: list[Volume] = field(default_factory=list)
    mounts: list[VolumeMount] = field(default_factory=list)
    shm_size: str = "16Gi"  # a memory-backed /dev/shm for DataLoader workers; "" for none
    env: dict[str, str] = field(default_factory=dict)
    secret_env: list[SecretEnv] = field(default_factory=list)
    service_account: str = ""
    runtime: str = "torch-distributed"
    runtime_kind: str = "ClusterTrainingRuntime"  # or TrainingRuntime (namespaced)
    active_deadline_seconds: int | None = None
    backoff_limit: int = 0  # pytorchjob only: pod restarts before the job fails
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, where: str = "trainjob spec") -> "TrainJobSpec":
        """Build from plain data (YAML / JSON), rejecting unknown keys with a clear error."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown} for TrainJobSpec")
        nested = {"tolerations": Toleration, "volumes": Volume, "mounts": VolumeMount, "secret_env": SecretEnv}
        kwargs = dict(raw)
        for key, sub in nested.items():
            if key in kwargs:
                items = kwargs[key] or []
                if not isinstance(items, list):
                    raise ConfigError(f"{where}.{key}: expected a list")
                try:
                    kwargs[key] = [item if isinstance(item, sub) else sub(**item) for item in items]
                except TypeError as err:
                    raise ConfigError(f"{where}.{key}: {err}") from err
        return cls(**kwargs)


def is_env_name(name: str) -> bool:
    """A C identifier in ASCII: what the project accepts as an environment variable name."""
    return bool(_ENV_NAME.match(name))


def derive_name(run: str, *parts: Any, prefix: str = "vsearch-") -> str:
    """A valid, deterministic job name: ``vsearch-<run slug>-<8 hex of sha256(parts)>`` (<= 63)."""
    digest = hashlib.sha256(json.dumps([run, *parts], sort_keys=True, default=str).encode()).hexdigest()[:8]
    slug = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", run.lower())).strip("-")
    head = f"{prefix}{slug}"[: 63 - 9].rstrip("-")
    return f"{head}-{digest}"


def validate(spec: TrainJobSpec, where: str = "trainjob spec") -> None:
    """Reject a spec the cluster would reject or run wrongly, naming the field and the rule."""
    if spec.flavour not in FLAVOURS:
        raise ConfigError(f"{where}: flavour must be one of {list(FLAVOURS)}, got {spec.flavour!r}")
    if not spec.name or len(spec.name) > 63 or not _DNS_LABEL.match(spec.name):
        raise ConfigError(
            f"{where}: name {spec.name!r} is not an RFC 1035 DNS label "
            "(lowercase letters, digits and '-', starting with a letter, at most 63 characters)"
        )
    if not spec.namespace or len(spec.namespace) > 63 or not _DNS1123_LABEL.match(spec.namespace):
        raise ConfigError(f"{where}: namespace {spec.namespace!r} is not a DNS-1123 label")
    if not isinstance(spec.image, str) or not spec.image or any(c.isspace() for c in spec.image):
        raise ConfigError(f"{where}: image must be a non-empty image reference, got {spec.image!r}")
    for key in ("num_nodes", "nproc_per_node"):
        value = getattr(spec, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: {key} must be an integer >= 1, got {value!r}")
    if isinstance(spec.accelerator_count, bool) or not isinstance(spec.accelerator_count, int) or spec.accelerator_count < 0:
        raise ConfigError(f"{where}: accelerator_count must be an integer >= 0, got {spec.accelerator_count!r}")
    if spec.accelerator_count > 0:
        if not spec.accelerator_type or "/" not in spec.accelerator_type:
            raise ConfigError(f"{where}: accelerator_type must be an extended resource name such as nvidia.com/gpu")
        if spec.nproc_per_node != spec.accelerator_count:
            raise ConfigError(
                f"{where}: nproc_per_node ({spec.nproc_per_node}) must equal accelerator_count "
                f"({spec.accelerator_count}): one training process per {spec.accelerator_type}"
            )
    for key in ("cpu", "memory", "shm_size"):
        value = str(getattr(spec, key))
        if value and not _QUANTITY.match(value):
            raise ConfigError(f"{where}: {key} {value!r} is not a Kubernetes quantity (e.g. 8, 500m, 32Gi)")
    validate_tolerations(spec.tolerations, where)
    names = [v.name for v in spec.volumes] + (["dshm"] if spec.shm_size else [])
    for i, v in enumerate(spec.volumes):
        if not v.name or len(v.name) > 63 or not _DNS1123_LABEL.match(v.name):
            raise ConfigError(f"{where}: volumes[{i}]: name {v.name!r} is not a DNS-1123 label")
        if v.pvc and (v.medium or v.size_limit):
            raise ConfigError(f"{where}: volumes[{i}] '{v.name}': medium/size_limit apply to emptyDir, not to a PVC")
        if v.medium not in ("", "Memory"):
            raise ConfigError(f"{where}: volumes[{i}] '{v.name}': medium must be '' or 'Memory', got {v.medium!r}")
        if v.size_limit and not _QUANTITY.match(v.size_limit):
            raise ConfigError(f"{where}: volumes[{i}] '{v.name}': size_limit {v.size_limit!r} is not a quantity")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: duplicate volume names {sorted({n for n in names if names.count(n) > 1})}")
    paths = [m.path for m in spec.mounts] + (["/dev/shm"] if spec.shm_size else [])
    for i, m in enumerate(spec.mounts):
        if m.volume not in names:
            raise ConfigError(f"{where}: mounts[{i}]: volume {m.volume!r} mounted at {m.path!r} is not in volumes {names}")
        if not m.path.startswith("/") or ".." in Path(m.path).parts:
            raise ConfigError(f"{where}: mounts[{i}]: path {m.path!r} must be absolute without '..'")
    if len(set(paths)) != len(paths):
        raise ConfigError(f"{where}: two volumes mounted at the same path {sorted({p for p in paths if paths.count(p) > 1})}")
    env_names = list(spec.env) + [s.name for s in spec.secret_env]
    for name in env_names:
        if not is_env_name(name):
            raise ConfigError(f"{where}: {name!r} is not an environment variable name")
        if name.startswith(RESERVED_ENV_PREFIX):
            raise ConfigError(f"{where}: env {name!r} is reserved: the job controller sets PET_* for torchrun")
    if len(set(env_names)) != len(env_names):
        raise ConfigError(f"{where}: environment variable set twice: {sorted({n for n in env_names if env_names.count(n) > 1})}")
    for s in spec.secret_env:
        if not s.secret or not s.key:
            raise ConfigError(f"{where}: secret env {s.name!r} needs a secret name and a key")
    if spec.runtime_kind not in ("ClusterTrainingRuntime", "TrainingRuntime") or not spec.runtime:
        raise ConfigError(f"{where}: runtime must name a ClusterTrainingRuntime or TrainingRuntime")
    if spec.active_deadline_seconds is not None and (not isinstance(spec.active_deadline_seconds, int) or spec.active_deadline_seconds < 1):
        raise ConfigError(f"{where}: active_deadline_seconds must be a positive integer or null")
