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

Modules: ``spec`` (the settings and their validation), ``manifest`` (rendering),
``client`` (submit and wait), ``run`` (the ``train_model`` step's distributed path),
``cli`` (``python -m vsearch.training.trainjob render``).
"""

from vsearch.training.trainjob.client import (
    FAILURE_CONDITION,
    RBAC_RULES,
    SUCCESS_CONDITIONS,
    TrainJobError,
    condition,
    load_api,
    submit_and_wait,
)
from vsearch.training.trainjob.cli import main
from vsearch.training.trainjob.manifest import (
    CONTAINER_SECURITY_CONTEXT,
    POD_SECURITY_CONTEXT,
    PYTORCH_CONTAINER,
    PYTORCH_PORT,
    PYTORCH_PORT_NAME,
    RUNTIME_PATCH_MANAGER,
    SCRATCH_PATH,
    SCRATCH_VOLUME,
    TRAINER_NODE,
    build_manifest,
    train_command,
)
from vsearch.training.trainjob.run import ENV_VAR, SA_NAMESPACE_FILE, launch, run_distributed
from vsearch.training.trainjob.spec import (
    FLAVOURS,
    PYTORCH_GROUP,
    PYTORCH_VERSION,
    PYTORCHJOB_PLURAL,
    RESERVED_ENV_PREFIX,
    TRAINER_GROUP,
    TRAINER_VERSION,
    TRAINJOB_PLURAL,
    SecretEnv,
    Toleration,
    TrainJobSpec,
    Volume,
    VolumeMount,
    derive_name,
    is_env_name,
    validate,
    validate_tolerations,
)

__all__ = [
    "CONTAINER_SECURITY_CONTEXT", "ENV_VAR", "FAILURE_CONDITION", "FLAVOURS", "POD_SECURITY_CONTEXT", "PYTORCHJOB_PLURAL",
    "PYTORCH_CONTAINER", "PYTORCH_GROUP", "PYTORCH_PORT", "PYTORCH_PORT_NAME", "PYTORCH_VERSION", "RBAC_RULES",
    "RESERVED_ENV_PREFIX", "RUNTIME_PATCH_MANAGER", "SA_NAMESPACE_FILE", "SCRATCH_PATH", "SCRATCH_VOLUME",
    "SUCCESS_CONDITIONS", "TRAINER_GROUP", "TRAINER_NODE", "TRAINER_VERSION", "TRAINJOB_PLURAL", "SecretEnv",
    "Toleration", "TrainJobError", "TrainJobSpec", "Volume", "VolumeMount", "build_manifest", "condition",
    "derive_name", "is_env_name", "launch", "load_api", "main", "run_distributed", "submit_and_wait", "train_command", "validate",
    "validate_tolerations",
]
