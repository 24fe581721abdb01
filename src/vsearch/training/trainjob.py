"""Multi-node training on Kubernetes: render, submit and wait for a Kubeflow Trainer TrainJob.

kfp-kubernetes has no op for distributed training jobs, so the ``train_model`` step creates
the job itself (``submit_and_wait``) and waits for it. Two flavours of the same run:

- ``trainjob`` (default): Kubeflow Trainer v2, ``trainer.kubeflow.org/v1alpha1`` ``TrainJob``
  referencing the ``torch-distributed`` ``ClusterTrainingRuntime``. Field names follow the
  released API of Kubeflow Trainer **v2.3** (PyPI ``kubeflow-trainer-api`` 2.3.0, and
  github.com/kubeflow/trainer ``pkg/apis/trainer/v1alpha1/trainjob_types.go`` /
  ``manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml``): ``spec.trainer`` carries
  image, command, args, env, numNodes, numProcPerNode and resourcesPerNode; Pod-level
  settings (tolerations, nodeSelector, volumes, serviceAccountName, the trainer container's
  volumeMounts) go through ``spec.runtimePatches[].trainingRuntimeSpec.template.spec
  .replicatedJobs[name=node].template.spec.template.spec``. (Trainer v2.0 called this
  ``podSpecOverrides`` and v2.1-v2.2 ``podTemplateOverrides`` with ``targetJobs: [{name:
  node}]``; v2.3 replaced both with ``runtimePatches`` keyed by ``manager``.)
- ``pytorchjob``: training-operator v1, ``kubeflow.org/v1`` ``PyTorchJob`` with a Master
  replica and ``num_nodes - 1`` Workers, container ``pytorch``, ``nprocPerNode``.

How the processes start, in both flavours: the controller does *not* launch torchrun; it
injects torchrun's settings as ``PET_*`` environment variables (Trainer torch plugin,
``pkg/runtime/framework/plugins/torch/torch.go``: PET_NNODES, PET_NPROC_PER_NODE,
PET_NODE_RANK from the Job completion index, PET_MASTER_ADDR = ``<job>-node-0-0.<job>``,
PET_MASTER_PORT = 29400; training-operator ``pkg/controller.v1/pytorch/envvar.go``: the
same PET_* names plus MASTER_ADDR/PORT), and torchrun reads every ``--flag`` from
``PET_<FLAG>`` by default. So the container command is ``torchrun --module vsearch.cli
train ...`` with no distributed flags: torchrun spawns ``nproc_per_node`` workers with
RANK / WORLD_SIZE / LOCAL_RANK, which ``vsearch.training.distributed.detect`` reads.

Data: the run reads its dataset from and writes its model to a shared ReadWriteMany PVC
mounted at the same path in the KFP step and in every TrainJob node (``run_distributed``
copies the dataset in and the published model out). Nothing here imports ``kubernetes``
at module import.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from vsearch import artifacts, model_folder
from vsearch.config import ConfigError

TRAINER_GROUP, TRAINER_VERSION, TRAINJOB_PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
PYTORCH_GROUP, PYTORCH_VERSION, PYTORCHJOB_PLURAL = "kubeflow.org", "v1", "pytorchjobs"
FLAVOURS = ("trainjob", "pytorchjob")
# Trainer v2 runtimes name the trainer replicated job and its container "node".
TRAINER_NODE = "node"
# training-operator's PyTorchJob looks for this container and port name.
PYTORCH_CONTAINER, PYTORCH_PORT_NAME, PYTORCH_PORT = "pytorch", "pytorchjob-port", 23456
RUNTIME_PATCH_MANAGER = "vsearch.io/train-model"
# Pod Security "restricted" (the namespace enforces it, k8s/base/namespace.yaml): the project
# image runs as uid/gid 10001 (dockerfiles/); fsGroup lets it write the shared PVC. The root
# filesystem is read-only; /tmp is an emptyDir (torchrun's and Python's scratch space).
POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY_CONTEXT = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                              "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
SCRATCH_VOLUME, SCRATCH_PATH = "vsearch-tmp", "/tmp"
# Terminal conditions (status "True"): Trainer v2 TrainJob / training-operator PyTorchJob.
# What `submit_and_wait` does to the API per flavour (create, poll, delete on timeout / retry):
# the pipeline-runner Role in k8s/base/rbac.yaml grants exactly this (tests/k8s checks it).
RBAC_RULES = {
    "trainjob": {"apiGroup": "trainer.kubeflow.org", "resource": "trainjobs", "verbs": ("create", "get", "delete")},
    "pytorchjob": {"apiGroup": "kubeflow.org", "resource": "pytorchjobs", "verbs": ("create", "get", "delete")},
}
SUCCESS_CONDITIONS = {"TrainJob": "Complete", "PyTorchJob": "Succeeded"}
FAILURE_CONDITION = "Failed"
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
    """An environment variable taken from a Kubernetes Secret key (never a value)."""

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
        if not _ENV_NAME.match(name):
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


# -- manifest ---------------------------------------------------------------------------


def train_command(train_args: list[str]) -> tuple[list[str], list[str]]:
    """(command, args) of the trainer container: torchrun, configured by the PET_* env."""
    return ["torchrun"], ["--module", "vsearch.cli", "train", *[str(a) for a in train_args]]


def _resources(spec: TrainJobSpec) -> dict:
    limits: dict[str, Any] = {}
    if spec.cpu:
        limits["cpu"] = str(spec.cpu)
    if spec.memory:
        limits["memory"] = str(spec.memory)
    if spec.accelerator_count:
        limits[spec.accelerator_type] = spec.accelerator_count
    return {"limits": limits}


def _env(spec: TrainJobSpec) -> list[dict]:
    env = [{"name": k, "value": str(v)} for k, v in sorted(spec.env.items())]
    for s in spec.secret_env:
        ref = {"name": s.secret, "key": s.key}
        if s.optional:
            ref["optional"] = True
        env.append({"name": s.name, "valueFrom": {"secretKeyRef": ref}})
    return env


def _volumes(spec: TrainJobSpec) -> list[dict]:
    out = []
    for v in spec.volumes:
        if v.pvc:
            claim: dict[str, Any] = {"claimName": v.pvc}
            if v.read_only:
                claim["readOnly"] = True
            out.append({"name": v.name, "persistentVolumeClaim": claim})
        else:
            empty: dict[str, Any] = {}
            if v.medium:
                empty["medium"] = v.medium
            if v.size_limit:
                empty["sizeLimit"] = v.size_limit
            out.append({"name": v.name, "emptyDir": empty})
    if spec.shm_size:
        out.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}})
    if not any(m.path == SCRATCH_PATH for m in spec.mounts):
        out.append({"name": SCRATCH_VOLUME, "emptyDir": {}})
    return out


def _mounts(spec: TrainJobSpec) -> list[dict]:
    out = []
    for m in spec.mounts:
        mount: dict[str, Any] = {"name": m.volume, "mountPath": m.path}
        if m.read_only:
            mount["readOnly"] = True
        out.append(mount)
    if spec.shm_size:
        out.append({"name": "dshm", "mountPath": "/dev/shm"})
    if not any(m.path == SCRATCH_PATH for m in spec.mounts):
        out.append({"name": SCRATCH_VOLUME, "mountPath": SCRATCH_PATH})
    return out


def _tolerations(spec: TrainJobSpec) -> list[dict]:
    out = []
    for t in spec.tolerations:
        tol: dict[str, Any] = {"operator": t.operator}
        if t.key:
            tol["key"] = t.key
        if t.value:
            tol["value"] = t.value
        if t.effect:
            tol["effect"] = t.effect
        if t.toleration_seconds is not None:
            tol["tolerationSeconds"] = int(t.toleration_seconds)
        out.append(tol)
    return out


def _pod_level(spec: TrainJobSpec) -> dict:
    pod: dict[str, Any] = {"securityContext": copy.deepcopy(POD_SECURITY_CONTEXT)}
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    if spec.node_selector:
        pod["nodeSelector"] = dict(sorted(spec.node_selector.items()))
    if spec.tolerations:
        pod["tolerations"] = _tolerations(spec)
    volumes = _volumes(spec)
    if volumes:
        pod["volumes"] = volumes
    return pod


def _metadata(spec: TrainJobSpec) -> dict:
    labels = {"app.kubernetes.io/name": "vsearch", "app.kubernetes.io/component": "train", **spec.labels}
    return {"name": spec.name, "namespace": spec.namespace, "labels": dict(sorted(labels.items()))}


def build_manifest(spec: TrainJobSpec, train_args: list[str]) -> dict:
    """The TrainJob (or PyTorchJob) object for ``spec`` running ``vsearch train <train_args>``.

    Args:
        spec: the job settings (validated here; ConfigError names the bad field).
        train_args: arguments of ``vsearch train`` (``--config``, ``--data``, ``--out`` ...).
            Paths must be visible in every node (the shared PVC).

    Returns:
        A plain dict ready for ``yaml.safe_dump`` or the Kubernetes API.
    """
    validate(spec)
    command, args = train_command(train_args)
    if spec.flavour == "pytorchjob":
        return _pytorchjob(spec, command, args)
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": command,
        "args": args,
        "numNodes": spec.num_nodes,
        "numProcPerNode": spec.nproc_per_node,
        "resourcesPerNode": _resources(spec),
    }
    env = _env(spec)
    if env:
        trainer["env"] = env
    job_spec: dict[str, Any] = {
        "runtimeRef": {"name": spec.runtime, "kind": spec.runtime_kind, "apiGroup": TRAINER_GROUP},
        "trainer": trainer,
    }
    # Always a runtime patch: the restricted security contexts have no field in spec.trainer.
    pod = _pod_level(spec)
    pod["containers"] = [{"name": TRAINER_NODE, "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
                          "volumeMounts": _mounts(spec)}]
    job_spec["runtimePatches"] = [{
        "manager": RUNTIME_PATCH_MANAGER,
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
            {"name": TRAINER_NODE, "template": {"spec": {"template": {"spec": pod}}}}
        ]}}},
    }]
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": "TrainJob",
        "metadata": _metadata(spec),
        "spec": job_spec,
    }


def _pytorchjob(spec: TrainJobSpec, command: list[str], args: list[str]) -> dict:
    container: dict[str, Any] = {
        "name": PYTORCH_CONTAINER,
        "image": spec.image,
        "command": command,
        "args": args,
        "resources": _resources(spec),
        "ports": [{"name": PYTORCH_PORT_NAME, "containerPort": PYTORCH_PORT}],
        "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
    }
    env = _env(spec)
    if env:
        container["env"] = env
    mounts = _mounts(spec)
    if mounts:
        container["volumeMounts"] = mounts
    pod = {"containers": [container], **_pod_level(spec)}
    meta = _metadata(spec)

    def replica(n: int) -> dict:
        # Deep copies: no shared sub-objects (YAML would render them as anchors/aliases).
        return {"replicas": n, "restartPolicy": "OnFailure",
                "template": {"metadata": {"labels": copy.deepcopy(meta["labels"])}, "spec": copy.deepcopy(pod)}}

    replicas = {"Master": replica(1)}
    if spec.num_nodes > 1:
        replicas["Worker"] = replica(spec.num_nodes - 1)
    run_policy: dict[str, Any] = {"cleanPodPolicy": "None", "backoffLimit": spec.backoff_limit}
    if spec.active_deadline_seconds:
        run_policy["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": f"{PYTORCH_GROUP}/{PYTORCH_VERSION}",
        "kind": "PyTorchJob",
        "metadata": meta,
        "spec": {"nprocPerNode": str(spec.nproc_per_node), "runPolicy": run_policy, "pytorchReplicaSpecs": replicas},
    }


# -- submit and wait --------------------------------------------------------------------


class TrainJobError(RuntimeError):
    """The training job failed, timed out or could not be created; the message says why."""


def _resource(manifest: dict) -> tuple[str, str, str, str, str]:
    group, _, version = manifest["apiVersion"].partition("/")
    plural = {"TrainJob": TRAINJOB_PLURAL, "PyTorchJob": PYTORCHJOB_PLURAL}.get(manifest["kind"])
    if plural is None:
        raise ConfigError(f"manifest: kind {manifest['kind']!r} is neither TrainJob nor PyTorchJob")
    return group, version, manifest["metadata"]["namespace"], plural, manifest["metadata"]["name"]


def load_api():
    """A CustomObjectsApi: in-cluster service-account config, else the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        # $KUBECONFIG read now (the client reads it once, at import); None: ~/.kube/config.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    return client.CustomObjectsApi()


def condition(obj: dict, kind: str) -> tuple[str, dict] | None:
    """("succeeded" | "failed", the condition) once the job reached a terminal condition."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if str(cond.get("status")) != "True":
            continue
        if cond.get("type") == SUCCESS_CONDITIONS[kind]:
            return "succeeded", cond
        if cond.get("type") == FAILURE_CONDITION:
            return "failed", cond
    return None


def _delete(api, group, version, ns, plural, name) -> None:
    from kubernetes.client import V1DeleteOptions
    from kubernetes.client.rest import ApiException

    try:
        # Foreground: the job's pods and child Jobs go with it.
        api.delete_namespaced_custom_object(group, version, ns, plural, name,
                                            body=V1DeleteOptions(propagation_policy="Foreground"))
    except ApiException as err:
        if err.status != 404:
            raise


def _describe(cond: dict) -> str:
    return f"{cond.get('reason') or cond.get('type')}: {cond.get('message') or '(no message)'}"


def submit_and_wait(
    manifest: dict,
    *,
    api=None,
    poll_s: float = 30.0,
    timeout_s: float = 48 * 3600.0,
    delete_on_timeout: bool = True,
    max_poll_errors: int = 5,
    log: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Create the job, poll its status conditions until it ends, return the final object.

    A job of the same name that already exists (a retried KFP step) is attached to when it is
    still running or complete, and replaced when it failed. Creation uses strict field
    validation, so an unknown field is an error rather than silently pruned.

    Args:
        manifest: from ``build_manifest``.
        api: a ``kubernetes.client.CustomObjectsApi``; default ``load_api()``.
        poll_s: seconds between status reads.
        timeout_s: give up after this many seconds (from creation).
        delete_on_timeout: delete the job (foreground) when giving up.
        max_poll_errors: consecutive 5xx answers to a status read tolerated before giving up.

    Raises:
        TrainJobError: the job failed (with the condition's reason and message), timed out,
            or the API refused it.
    """
    from kubernetes.client.rest import ApiException

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    api = api if api is not None else load_api()
    group, version, ns, plural, name = _resource(manifest)
    kind = manifest["kind"]
    where = f"{kind} {ns}/{name}"

    def create() -> None:
        api.create_namespaced_custom_object(group, version, ns, plural, manifest, field_validation="Strict")

    def read() -> dict:
        errors = 0
        while True:
            try:
                return api.get_namespaced_custom_object(group, version, ns, plural, name)
            except ApiException as err:
                if err.status == 404:
                    raise TrainJobError(f"{where} disappeared while waiting for it (deleted by someone else?)") from err
                errors += 1
                # An API server restart over a two-day run is normal: tolerate a few 5xx in a row.
                if (err.status or 0) < 500 or errors > max_poll_errors:
                    raise TrainJobError(f"{where}: reading its status failed ({err.status} {err.reason}): "
                                        f"{_api_message(err)}") from err
                log(f"{where}: status read failed ({err.status} {err.reason}), retrying ({errors}/{max_poll_errors})")
                sleep(poll_s)

    try:
        create()
        log(f"created {where}")
    except ApiException as err:
        if err.status != 409:
            raise TrainJobError(f"{where}: the API refused the job ({err.status} {err.reason}): {_api_message(err)}") from err
        state = condition(read(), kind)
        if state is not None and state[0] == "failed":
            log(f"{where} exists and failed ({_describe(state[1])}): replacing it")
            _delete(api, group, version, ns, plural, name)
            _wait_gone(api, group, version, ns, plural, name, poll_s, clock, sleep, timeout_s)
            create()
        else:
            log(f"{where} exists: attaching to it")
    started = clock()
    while True:
        obj = read()
        state = condition(obj, kind)
        if state is not None:
            outcome, cond = state
            if outcome == "succeeded":
                log(f"{where} {cond['type']}")
                return obj
            raise TrainJobError(f"{where} failed: {_describe(cond)}")
        if clock() - started >= timeout_s:
            if delete_on_timeout:
                _delete(api, group, version, ns, plural, name)
                raise TrainJobError(f"{where} did not finish within {timeout_s:g} s: deleted it")
            raise TrainJobError(f"{where} did not finish within {timeout_s:g} s (left running)")
        sleep(poll_s)


def _wait_gone(api, group, version, ns, plural, name, poll_s, clock, sleep, timeout_s) -> None:
    from kubernetes.client.rest import ApiException

    started = clock()
    while clock() - started < timeout_s:
        try:
            api.get_namespaced_custom_object(group, version, ns, plural, name)
        except ApiException as err:
            if err.status == 404:
                return
            raise
        sleep(poll_s)
    raise TrainJobError(f"{plural} {ns}/{name}: the failed job was not deleted within {timeout_s:g} s")


def _api_message(err) -> str:
    try:
        return json.loads(err.body).get("message") or str(err.body)
    except (TypeError, ValueError, AttributeError):
        return str(err.body)


# -- the distributed run used by the train_model component ----------------------------


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


ENV_VAR = "VSEARCH_TRAINJOB"
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


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


# -- command line -----------------------------------------------------------------------


def _default_image() -> str:
    from vsearch.images import GPU_IMAGE

    return GPU_IMAGE


def main(argv: list[str] | None = None) -> int:
    """``python -m vsearch.training.trainjob render --config NAME --data DIR --out DIR --nodes N``."""
    import argparse

    import yaml

    parser = argparse.ArgumentParser(prog="python -m vsearch.training.trainjob",
                                     description="Render the Kubeflow TrainJob / PyTorchJob of a multi-node run.")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="print the job manifest as YAML (kubectl apply -f -)")
    render.add_argument("--config", required=True, help="config preset or YAML path inside the image")
    render.add_argument("--data", required=True, help="dataset folder as the nodes see it (shared volume)")
    render.add_argument("--out", required=True, help="model folder as the nodes see it (shared volume)")
    render.add_argument("--init", help="model folder to start from")
    render.add_argument("--spec", help="YAML file with TrainJobSpec fields (flags below override it)")
    render.add_argument("--name", help="job name (default: derived from config, data and out)")
    render.add_argument("--namespace")
    render.add_argument("--image", help="default: the project GPU image (vsearch.images.GPU_IMAGE)")
    render.add_argument("--flavour", choices=FLAVOURS)
    render.add_argument("--nodes", type=int, help="number of nodes")
    render.add_argument("--nproc-per-node", type=int)
    render.add_argument("--gpus-per-node", type=int, help="accelerators per node (0: CPU only)")
    render.add_argument("--pvc", help="ReadWriteMany PVC mounted in every node")
    render.add_argument("--mount-path", default="/mnt/vsearch", help="where the PVC is mounted")
    render.add_argument("--service-account")
    render.add_argument("overrides", nargs="*", help="dotted config overrides passed to vsearch train")
    args = parser.parse_args(argv)

    raw: dict[str, Any] = {}
    if args.spec:
        path = Path(args.spec)
        if not path.is_file():
            raise ConfigError(f"{path}: spec file not found")
        raw = yaml.safe_load(path.read_text()) or {}
    spec = TrainJobSpec.from_dict(raw, where=args.spec or "trainjob spec")
    for key, value in (("namespace", args.namespace), ("image", args.image), ("flavour", args.flavour),
                       ("num_nodes", args.nodes), ("nproc_per_node", args.nproc_per_node),
                       ("service_account", args.service_account)):
        if value is not None:
            setattr(spec, key, value)
    if args.gpus_per_node is not None:
        spec.accelerator_count = args.gpus_per_node
        if args.nproc_per_node is None and args.gpus_per_node > 0:
            spec.nproc_per_node = args.gpus_per_node
    if args.pvc:
        spec.volumes.append(Volume(name="vsearch-shared", pvc=args.pvc))
        spec.mounts.append(VolumeMount(volume="vsearch-shared", path=args.mount_path))
    spec.image = spec.image or _default_image()
    spec.name = args.name or spec.name or derive_name(Path(args.config).stem, args.config, args.data, args.out, args.overrides)
    train_args = ["--config", args.config, "--data", args.data, "--out", args.out, "--quiet"]
    if args.init:
        train_args += ["--init", args.init]
    manifest = build_manifest(spec, train_args + list(args.overrides))
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
    return 0


if __name__ == "__main__":
    from vsearch.schema import DataError

    try:
        sys.exit(main())
    except (ConfigError, DataError) as err:
        print(f"vsearch.training.trainjob: error: {err}", file=sys.stderr)
        sys.exit(2)
