"""Rendering: a validated ``TrainJobSpec`` -> the TrainJob (Trainer v2) or PyTorchJob
(training-operator v1) object, Pod Security "restricted" included."""

from __future__ import annotations

import copy
from typing import Any

from vsearch.training.trainjob.spec import (
    PYTORCH_GROUP,
    PYTORCH_VERSION,
    TRAINER_GROUP,
    TRAINER_VERSION,
    TrainJobSpec,
    validate,
)

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
