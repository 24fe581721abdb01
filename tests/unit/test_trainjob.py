"""Multi-node training jobs: the TrainJob / PyTorchJob manifests, their validation against the
published CRD schemas and Kubernetes' own Pod schemas, submit-and-wait against a fake
Kubernetes API server speaking the real wire format, and the train_model step end to end.

No cluster can run here. ``FakeKube`` serves the custom-objects REST endpoints the
``kubernetes`` client calls (POST / GET / DELETE ``/apis/{group}/{version}/namespaces/{ns}/
{plural}[/{name}]``), answers errors as ``v1 Status`` objects, and on creation validates the
body against the vendored CRD schema with strict field validation, as the API server does
with ``fieldValidation=Strict``. A job's status then follows a script of conditions, or
(``run_pods``) the fake plays the Trainer controller + kubelet: it starts each node's
container command on loopback with the PET_* environment the Trainer torch plugin injects,
and reports Complete / Failed from the exit codes.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import yaml

from vsearch.config import ConfigError
from vsearch.training import trainjob as tj
from vsearch.training.device import REQUIRE_CUDA_ENV
from vsearch.training.trainjob import (
    SecretEnv,
    Toleration,
    TrainJobError,
    TrainJobSpec,
    Volume,
    VolumeMount,
    build_manifest,
    derive_name,
    submit_and_wait,
)

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "k8s"))
from pod_security import restricted_violations  # noqa: E402  (one checker for k8s/ and TrainJob pods)
CRDS = {
    ("trainer.kubeflow.org", "v1alpha1", "trainjobs"): SCHEMAS / "trainer.kubeflow.org_trainjobs.v1alpha1.yaml",
    ("kubeflow.org", "v1", "pytorchjobs"): SCHEMAS / "kubeflow.org_pytorchjobs.v1.yaml",
}
K8S_VERSION = "1.32"
SECRET_VALUE = "AKIA-not-a-real-key-but-must-never-appear"


# -- schema helpers --------------------------------------------------------------------


def _strict(node: Any) -> Any:
    """The CRD schema as the API server applies it with fieldValidation=Strict: an unknown
    field is an error (plain JSON Schema would accept it, the server would prune or reject)."""
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def crd_validator(key) -> jsonschema.Draft202012Validator:
    doc = yaml.safe_load(CRDS[key].read_text())
    schema = _strict(doc["openAPIV3Schema"])
    schema["$defs"] = _strict(doc.get("$defs", {}))
    return jsonschema.Draft202012Validator(schema)


def crd_errors(obj: dict) -> list[str]:
    group, _, version = obj["apiVersion"].partition("/")
    plural = {"TrainJob": "trainjobs", "PyTorchJob": "pytorchjobs"}[obj["kind"]]
    key = (group, version, plural)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator(key).iter_errors(obj)]
    if obj["kind"] == "TrainJob":
        # The CRD's CEL rules on metadata.name, read from the vendored schema itself.
        rules = yaml.safe_load(CRDS[key].read_text())["openAPIV3Schema"]["x-kubernetes-validations"]
        name = obj["metadata"]["name"]
        for rule in rules:
            pattern = re.search(r"matches\('(.+)'\)", rule["rule"])
            if pattern and not re.match(pattern.group(1), name):
                errors.append(f"metadata.name: {rule['message']}")
            limit = re.search(r"size\(self\.metadata\.name\) <= (\d+)", rule["rule"])
            if limit and len(name) > int(limit.group(1)):
                errors.append(f"metadata.name: {rule['message']}")
    return errors


def node_pods(manifest: dict) -> list[dict]:
    """The Pods the controller would create, as far as vsearch sets them: for a TrainJob the
    trainer container (image, command, args, env, resources) merged with the runtime patch
    (Pod fields, volumeMounts); for a PyTorchJob each replica's template."""
    if manifest["kind"] == "PyTorchJob":
        return [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{manifest['metadata']['name']}-{r.lower()}-0"},
                 "spec": copy.deepcopy(spec["template"]["spec"])}
                for r, spec in manifest["spec"]["pytorchReplicaSpecs"].items()]
    trainer = manifest["spec"]["trainer"]
    container = {"name": "node", "image": trainer["image"], "command": trainer["command"], "args": trainer["args"],
                 "resources": trainer["resourcesPerNode"]}
    if "env" in trainer:
        container["env"] = trainer["env"]
    pod_spec: dict = {}
    for patch in manifest["spec"].get("runtimePatches", []):
        for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            assert job["name"] == "node"
            pod_spec = copy.deepcopy(job["template"]["spec"]["template"]["spec"])
    for patch_container in pod_spec.pop("containers", []):
        assert patch_container["name"] == "node"
        container["volumeMounts"] = patch_container["volumeMounts"]
        container["securityContext"] = patch_container["securityContext"]
    pod_spec["containers"] = [container]
    return [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{manifest['metadata']['name']}-node-0-0"},
             "spec": pod_spec}]


def validate_pods(manifest: dict) -> None:
    import kubernetes_validate

    for pod in node_pods(manifest):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


# -- specs -----------------------------------------------------------------------------


def full_spec(**changes) -> TrainJobSpec:
    spec = TrainJobSpec(
        name="vsearch-three-tower-0123abcd",
        namespace="team-a",
        image="ghcr.io/vsearch-ml/vsearch:0.1.0-cuda",
        num_nodes=2,
        nproc_per_node=4,
        cpu="16",
        memory="64Gi",
        accelerator_type="nvidia.com/gpu",
        accelerator_count=4,
        tolerations=[Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),
                     Toleration(key="pool", operator="Equal", value="a100", effect="NoExecute", toleration_seconds=600)],
        node_selector={"nvidia.com/gpu.product": "A100-SXM4-80GB"},
        volumes=[Volume(name="vsearch-shared", pvc="vsearch-shared"), Volume(name="scratch", size_limit="100Gi")],
        mounts=[VolumeMount(volume="vsearch-shared", path="/mnt/vsearch"), VolumeMount(volume="scratch", path="/scratch")],
        shm_size="32Gi",
        env={"HF_HUB_OFFLINE": "1", "NCCL_DEBUG": "WARN"},
        secret_env=[SecretEnv(name="AWS_ACCESS_KEY_ID", secret="vsearch-object-store", key="AWS_ACCESS_KEY_ID", optional=True),
                    SecretEnv(name="AWS_SECRET_ACCESS_KEY", secret="vsearch-object-store", key="AWS_SECRET_ACCESS_KEY")],
        service_account="vsearch-trainer",
        active_deadline_seconds=86400,
    )
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


TRAIN_ARGS = ["--config", "three_tower", "--data", "/mnt/vsearch/run/data", "--out", "/mnt/vsearch/run/model",
              "--quiet", "train.max_steps=1000"]


# -- manifests -------------------------------------------------------------------------


def test_trainjob_manifest_carries_every_setting_in_the_v1alpha1_fields():
    m = build_manifest(full_spec(), TRAIN_ARGS)
    assert m["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and m["kind"] == "TrainJob"
    assert m["metadata"]["name"] == "vsearch-three-tower-0123abcd" and m["metadata"]["namespace"] == "team-a"
    spec = m["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime",
                                  "apiGroup": "trainer.kubeflow.org"}
    trainer = spec["trainer"]
    assert trainer["image"] == "ghcr.io/vsearch-ml/vsearch:0.1.0-cuda"
    # torchrun takes nnodes / nproc / node rank / master from the PET_* env the runtime injects.
    assert trainer["command"] == ["torchrun"]
    assert trainer["args"] == ["--module", "vsearch.cli", "train", *TRAIN_ARGS]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
    assert trainer["resourcesPerNode"] == {"limits": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": 4}}
    assert trainer["env"] == [
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "NCCL_DEBUG", "value": "WARN"},
        {"name": "AWS_ACCESS_KEY_ID",
         "valueFrom": {"secretKeyRef": {"name": "vsearch-object-store", "key": "AWS_ACCESS_KEY_ID", "optional": True}}},
        {"name": "AWS_SECRET_ACCESS_KEY",
         "valueFrom": {"secretKeyRef": {"name": "vsearch-object-store", "key": "AWS_SECRET_ACCESS_KEY"}}},
    ]
    assert spec["activeDeadlineSeconds"] == 86400
    [patch] = spec["runtimePatches"]
    assert patch["manager"] == "vsearch.io/train-model"
    [job] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == "node"
    pod = job["template"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "vsearch-trainer"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "A100-SXM4-80GB"}
    assert pod["tolerations"] == [
        {"operator": "Exists", "key": "nvidia.com/gpu", "effect": "NoSchedule"},
        {"operator": "Equal", "key": "pool", "value": "a100", "effect": "NoExecute", "tolerationSeconds": 600},
    ]
    assert pod["volumes"] == [
        {"name": "vsearch-shared", "persistentVolumeClaim": {"claimName": "vsearch-shared"}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "100Gi"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}},
        {"name": "vsearch-tmp", "emptyDir": {}},
    ]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["containers"] == [{"name": "node", "volumeMounts": [
        {"name": "vsearch-shared", "mountPath": "/mnt/vsearch"},
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "vsearch-tmp", "mountPath": "/tmp"},
    ], "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                           "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}}]


def test_trainjob_manifest_is_valid_for_the_published_crd_and_kubernetes_pod_schemas():
    m = build_manifest(full_spec(), TRAIN_ARGS)
    assert crd_errors(m) == []
    validate_pods(m)
    # Secrets are referenced, never copied: the manifest holds no value of a secret env var.
    text = yaml.safe_dump(m)
    assert SECRET_VALUE not in text
    for env in m["spec"]["trainer"]["env"]:
        if env["name"].startswith("AWS_"):
            assert set(env) == {"name", "valueFrom"} and set(env["valueFrom"]) == {"secretKeyRef"}


def test_minimal_cpu_trainjob_patches_only_security_and_scratch_and_is_valid():
    spec = TrainJobSpec(name="vsearch-cpu-run", image="vsearch:dev", num_nodes=3, nproc_per_node=2,
                        accelerator_count=0, shm_size="")
    m = build_manifest(spec, TRAIN_ARGS)
    assert "env" not in m["spec"]["trainer"]
    [patch] = m["spec"]["runtimePatches"]
    pod = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert set(pod) == {"securityContext", "containers", "volumes"}
    assert m["spec"]["trainer"]["resourcesPerNode"] == {"limits": {"cpu": "8", "memory": "32Gi"}}
    assert crd_errors(m) == []
    validate_pods(m)


@pytest.mark.parametrize("flavour", ["trainjob", "pytorchjob"])
@pytest.mark.parametrize("make", [full_spec, lambda flavour: TrainJobSpec(name="vsearch-cpu-run", image="vsearch:dev",
                                                                         accelerator_count=0, shm_size="", flavour=flavour)],
                         ids=["full", "minimal"])
def test_every_training_pod_meets_restricted_pod_security(flavour, make):
    spec = make(flavour=flavour)
    pods = node_pods(build_manifest(spec, TRAIN_ARGS))
    assert pods
    for pod in pods:
        assert restricted_violations(pod) == [], pod["metadata"]["name"]
        [container] = pod["spec"]["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"name": "vsearch-tmp", "mountPath": "/tmp"} in container["volumeMounts"]  # the writable scratch
    # The check above can fail.
    bad = copy.deepcopy(pods[0])
    bad["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    del bad["spec"]["securityContext"]["seccompProfile"]
    bad["spec"]["containers"][0]["securityContext"].pop("seccompProfile")
    name = bad["spec"]["containers"][0]["name"]
    assert restricted_violations(bad) == [f"{name}: allowPrivilegeEscalation must be false", f"{name}: seccompProfile"]


def test_a_user_mount_at_tmp_replaces_the_scratch_volume():
    spec = full_spec(volumes=[Volume(name="fast", size_limit="10Gi")], mounts=[VolumeMount(volume="fast", path="/tmp")])
    [pod] = node_pods(build_manifest(spec, TRAIN_ARGS))
    assert [m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]].count("/tmp") == 1
    assert "vsearch-tmp" not in {v["name"] for v in pod["spec"]["volumes"]}
    validate_pods(build_manifest(spec, TRAIN_ARGS))


def test_the_schema_checks_catch_what_a_cluster_would_refuse():
    good = build_manifest(full_spec(), TRAIN_ARGS)
    # The pre-v2.3 field name: the v2.3 API server rejects it under strict field validation.
    old = copy.deepcopy(good)
    old["spec"]["podTemplateOverrides"] = old["spec"].pop("runtimePatches")
    assert any("podTemplateOverrides" in e for e in crd_errors(old))
    # numProcPerNode is int32 in v2.3 (no "auto" string).
    auto = copy.deepcopy(good)
    auto["spec"]["trainer"]["numProcPerNode"] = "auto"
    assert any("numProcPerNode" in e for e in crd_errors(auto))
    # The CRD's CEL rule on the name (RFC 1035: starts with a letter).
    digit = copy.deepcopy(good)
    digit["metadata"]["name"] = "3-tower"
    assert crd_errors(digit) == ["metadata.name: metadata.name must match RFC 1035 DNS label format"]
    # A misspelt toleration field passes neither schema.
    typo = copy.deepcopy(good)
    pod = typo["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod["template"]["spec"]["template"]["spec"]["tolerations"][0]["efect"] = "NoSchedule"
    assert any("efect" in e for e in crd_errors(typo))
    import kubernetes_validate

    with pytest.raises(kubernetes_validate.ValidationError, match="efect"):
        validate_pods(typo)


def test_pytorchjob_manifest_has_master_and_workers_and_is_valid():
    m = build_manifest(full_spec(flavour="pytorchjob", num_nodes=3, backoff_limit=2), TRAIN_ARGS)
    assert m["apiVersion"] == "kubeflow.org/v1" and m["kind"] == "PyTorchJob"
    spec = m["spec"]
    assert spec["nprocPerNode"] == "4"
    assert spec["runPolicy"] == {"cleanPodPolicy": "None", "backoffLimit": 2, "activeDeadlineSeconds": 86400}
    replicas = spec["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in replicas.items()} == {"Master": 1, "Worker": 2}
    for replica in replicas.values():
        pod = replica["template"]["spec"]
        [container] = pod["containers"]
        assert container["name"] == "pytorch"  # the name training-operator looks for
        assert container["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456}]
        assert container["command"] == ["torchrun"] and container["args"][:3] == ["--module", "vsearch.cli", "train"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
        assert {v["name"] for v in pod["volumes"]} == {"vsearch-shared", "scratch", "dshm", "vsearch-tmp"}
        assert {m_["mountPath"] for m_ in container["volumeMounts"]} == {"/mnt/vsearch", "/scratch", "/dev/shm", "/tmp"}
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu" and pod["serviceAccountName"] == "vsearch-trainer"
        assert container["env"][2]["valueFrom"]["secretKeyRef"]["name"] == "vsearch-object-store"
    assert crd_errors(m) == []
    validate_pods(m)
    # One node: a Master only.
    single = build_manifest(full_spec(flavour="pytorchjob", num_nodes=1), TRAIN_ARGS)
    assert list(single["spec"]["pytorchReplicaSpecs"]) == ["Master"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"name": "Vsearch_Run"}, "not an RFC 1035 DNS label"),
        ({"name": "3tower"}, "not an RFC 1035 DNS label"),
        ({"name": "a" * 64}, "at most 63 characters"),
        ({"name": ""}, "not an RFC 1035 DNS label"),
        ({"num_nodes": 0}, "num_nodes must be an integer >= 1, got 0"),
        ({"nproc_per_node": 2}, "nproc_per_node (2) must equal accelerator_count (4)"),
        ({"mounts": [VolumeMount(volume="data", path="/data")]}, "volume 'data' mounted at '/data' is not in volumes"),
        ({"mounts": [VolumeMount(volume="scratch", path="data")]}, "must be absolute"),
        ({"volumes": [Volume(name="dshm")], "mounts": []}, "duplicate volume names ['dshm']"),
        ({"env": {"PET_NNODES": "4"}}, "reserved"),
        ({"env": {"AWS_ACCESS_KEY_ID": "x"}}, "environment variable set twice"),
        ({"memory": "32 GB"}, "not a Kubernetes quantity"),
        ({"tolerations": [Toleration(key="gpu", operator="Exists", value="yes")]}, "Exists takes no value"),
        ({"flavour": "mpijob"}, "flavour must be one of"),
        ({"image": ""}, "image must be a non-empty"),
    ],
)
def test_bad_specs_are_refused_with_the_field_and_rule(changes, message):
    with pytest.raises(ConfigError) as err:
        build_manifest(full_spec(**changes), TRAIN_ARGS)
    assert message in str(err.value)


def test_spec_from_plain_data_rejects_unknown_keys():
    spec = TrainJobSpec.from_dict({"name": "x", "tolerations": [{"key": "k", "operator": "Exists"}],
                                   "mounts": [{"volume": "v", "path": "/v"}]})
    assert spec.tolerations == [Toleration(key="k", operator="Exists")] and spec.mounts == [VolumeMount("v", "/v")]
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['gpus'\]"):
        TrainJobSpec.from_dict({"gpus": 8})
    with pytest.raises(ConfigError, match="secret_env"):
        TrainJobSpec.from_dict({"secret_env": [{"name": "A", "value": "leaked"}]})


def test_derived_names_are_valid_deterministic_and_distinct():
    a = derive_name("three_tower", "s3://bucket/run-1/model")
    assert a == derive_name("three_tower", "s3://bucket/run-1/model")
    assert a != derive_name("three_tower", "s3://bucket/run-2/model")
    assert re.fullmatch(r"vsearch-three-tower-[0-9a-f]{8}", a)
    long = derive_name("A_Very--Long__Config.Name " * 10, 1)
    assert len(long) <= 63 and tj.spec._DNS_LABEL.match(long)
    spec = TrainJobSpec(name=long, image="x", accelerator_count=0)
    assert crd_errors(build_manifest(spec, [])) == []


def test_render_cli_prints_the_manifest_and_refuses_bad_input(tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"namespace": "team-a", "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}))
    assert tj.main(["render", "--config", "three_tower", "--data", "/mnt/vsearch/d", "--out", "/mnt/vsearch/m",
                    "--nodes", "2", "--gpus-per-node", "8", "--pvc", "vsearch-shared", "--spec", str(spec_file),
                    "--image", "reg/vsearch:1", "train.max_steps=10"]) == 0
    m = yaml.safe_load(capsys.readouterr().out)
    assert m["kind"] == "TrainJob" and m["metadata"]["namespace"] == "team-a"
    assert m["spec"]["trainer"]["numNodes"] == 2 and m["spec"]["trainer"]["numProcPerNode"] == 8
    assert m["spec"]["trainer"]["args"][-1] == "train.max_steps=10"
    assert re.fullmatch(r"vsearch-three-tower-[0-9a-f]{8}", m["metadata"]["name"])
    assert crd_errors(m) == []
    # As a command: a bad spec is one line on stderr and exit status 2.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    bad = subprocess.run([sys.executable, "-m", "vsearch.training.trainjob", "render", "--config", "tiny", "--data", "/d",
                          "--out", "/m", "--nodes", "0", "--image", "x"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "vsearch.training.trainjob: error: trainjob spec: num_nodes must be an integer >= 1, got 0"]


# -- a fake Kubernetes API server ---------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any = None


@dataclass
class FakeKube:
    """Custom-objects endpoints of kube-apiserver, in memory. ``script[name]``: the status
    conditions the job shows at each successive GET (the last one stays)."""

    script: dict[str, list[list[dict]]] = field(default_factory=dict)
    run_pods: bool = False
    secrets: dict[tuple[str, str], str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    objects: dict[tuple, dict] = field(default_factory=dict)
    pod_logs: dict[str, str] = field(default_factory=dict)
    unavailable_gets: int = 0  # answer this many GETs with 503 (an API server restarting)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._gets: dict[str, int] = {}
        self._uids = itertools.count(1)
        self._threads: list[threading.Thread] = []
        self._procs: list[subprocess.Popen] = []

    # lifecycle
    def start(self) -> "FakeKube":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                fake._dispatch(self)

            do_GET = do_POST = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=120)
        for proc in self._procs:  # never leave a "node" behind, whatever happened
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def api(self):
        from kubernetes import client

        configuration = client.Configuration(host=self.url)
        return client.CustomObjectsApi(client.ApiClient(configuration))

    def routes(self) -> list[str]:
        return [f"{c.method} {c.path}" for c in self.calls]

    # HTTP
    def _reply(self, h, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                "reason": reason, "details": details or {}, "code": code}

    def _dispatch(self, h) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        body = json.loads(h.rfile.read(length)) if length else None
        with self._lock:
            self.calls.append(Call(h.command, parts.path, query, body))
        m = re.fullmatch(r"/apis/([^/]+)/([^/]+)/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?", parts.path)
        if not m or (m.group(1), m.group(2), m.group(4)) not in CRDS:
            return self._reply(h, 404, self.status(404, "NotFound", f"the server could not find the requested resource {parts.path}"))
        group, version, ns, plural, name = m.groups()
        kind = {"trainjobs": "TrainJob", "pytorchjobs": "PyTorchJob"}[plural]
        if h.command == "POST" and name is None:
            return self._create(h, (group, version, ns, plural), kind, body, query)
        key = (group, version, ns, plural, name)
        with self._lock:
            obj = self.objects.get(key)
        if obj is None:
            return self._reply(h, 404, self.status(404, "NotFound", f'{plural}.{group} "{name}" not found',
                                                   {"name": name, "group": group, "kind": plural}))
        if h.command == "GET":
            with self._lock:
                unavailable, self.unavailable_gets = self.unavailable_gets > 0, max(0, self.unavailable_gets - 1)
            if unavailable:
                return self._reply(h, 503, self.status(503, "ServiceUnavailable", "the server is currently unable to handle the request"))
            return self._reply(h, 200, self._advance(key))
        if h.command == "DELETE":
            with self._lock:
                del self.objects[key]
            return self._reply(h, 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                        "details": {"name": name, "group": group, "kind": plural, "uid": obj["metadata"]["uid"]}})
        return self._reply(h, 405, self.status(405, "MethodNotAllowed", "method not allowed"))

    def _create(self, h, coll, kind, body, query) -> None:
        group, version, ns, plural = coll
        if not isinstance(body, dict) or body.get("kind") != kind or body.get("apiVersion") != f"{group}/{version}":
            return self._reply(h, 400, self.status(400, "BadRequest", "the object's kind/apiVersion do not match the URL"))
        name = body["metadata"]["name"]
        if body["metadata"].get("namespace", ns) != ns:
            return self._reply(h, 400, self.status(400, "BadRequest", "the namespace of the object does not match the URL"))
        errors = crd_errors(body) if query.get("fieldValidation") == "Strict" else []
        if errors:
            return self._reply(h, 422, self.status(422, "Invalid", f'{kind}.{group} "{name}" is invalid: ' + "; ".join(errors)))
        key = (*coll, name)
        with self._lock:
            if key in self.objects:
                return self._reply(h, 409, self.status(409, "AlreadyExists", f'{plural}.{group} "{name}" already exists'))
            obj = copy.deepcopy(body)
            obj["metadata"].update(uid=f"uid-{next(self._uids):04d}", namespace=ns, generation=1, resourceVersion="1",
                                   creationTimestamp="2026-01-01T00:00:00Z")
            self.objects[key] = obj
            self._gets[name] = 0
        if self.run_pods:
            thread = threading.Thread(target=self._run_nodes, args=(key,), daemon=True)
            self._threads.append(thread)
            thread.start()
        return self._reply(h, 201, obj)

    def _advance(self, key) -> dict:
        name = key[-1]
        with self._lock:
            obj = self.objects[key]
            if name in self.script:
                steps = self.script[name]
                i = min(self._gets[name], len(steps) - 1)
                self._gets[name] += 1
                obj["status"] = {"conditions": steps[i]} if steps[i] else {}
            return copy.deepcopy(obj)

    # the Trainer controller + kubelet, on loopback
    def _run_nodes(self, key) -> None:
        obj = self.objects[key]
        trainer = obj["spec"]["trainer"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ)
        for var in trainer.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            else:
                ref = var["valueFrom"]["secretKeyRef"]
                value = self.secrets.get((ref["name"], ref["key"]))
                if value is None and not ref.get("optional"):
                    return self._finish(key, "Failed", "CreateContainerConfigError", f'secret "{ref["name"]}" not found')
                if value is not None:
                    env[var["name"]] = value
        # torch.go: PET_* for torchrun; MASTER_ADDR is <job>-node-0-0.<job> in a cluster.
        env.update(PET_NNODES=str(trainer["numNodes"]), PET_NPROC_PER_NODE=str(trainer["numProcPerNode"]),
                   PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(port))
        command = trainer["command"]
        if command[0] == "torchrun":  # the console script of the image's torch, in this venv
            command = [sys.executable, "-m", "torch.distributed.run", *command[1:]]
        procs = []
        for rank in range(trainer["numNodes"]):
            procs.append(subprocess.Popen([*command, *trainer["args"]], env={**env, "PET_NODE_RANK": str(rank)},
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            self._procs.append(procs[-1])
        self._set(key, [{"type": "Created", "status": "True", "reason": "JobsCreationSucceeded", "message": "jobs created",
                         "lastTransitionTime": "2026-01-01T00:00:01Z"}])
        codes = []
        for rank, proc in enumerate(procs):
            try:
                out, _ = proc.communicate(timeout=110)
            except subprocess.TimeoutExpired:
                proc.kill()
                out = proc.communicate()[0] + "\n[killed: node still running after 110 s]"
            self.pod_logs[f"node-{rank}"] = out
            codes.append(proc.returncode)
        if all(c == 0 for c in codes):
            self._finish(key, "Complete", "JobsCompleted", "jobset completed")
        else:
            failed = next(i for i, c in enumerate(codes) if c != 0)
            self._finish(key, "Failed", "JobsFailed", f"node-{failed} exited with code {codes[failed]}")

    def _set(self, key, conditions) -> None:
        with self._lock:
            if key in self.objects:
                self.objects[key]["status"] = {"conditions": conditions}

    def _finish(self, key, type_, reason, message) -> None:
        self._set(key, [{"type": type_, "status": "True", "reason": reason, "message": message,
                         "lastTransitionTime": "2026-01-01T00:10:00Z"}])


def cond(type_: str, reason: str, message: str, status: str = "True") -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}


@pytest.fixture
def kube():
    fake = FakeKube().start()
    yield fake
    fake.stop()


TJ_PATH = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/team-a/trainjobs"


def _quiet(msg: str) -> None:
    pass


def test_submit_and_wait_creates_strictly_and_returns_when_complete(kube):
    m = build_manifest(full_spec(), TRAIN_ARGS)
    name = m["metadata"]["name"]
    kube.script[name] = [[], [cond("Created", "JobsCreationSucceeded", "ok")],
                         [cond("Created", "JobsCreationSucceeded", "ok"), cond("Complete", "JobsCompleted", "jobset completed")]]
    final = submit_and_wait(m, api=kube.api(), poll_s=0.01, timeout_s=30, log=_quiet)
    assert final["status"]["conditions"][-1]["type"] == "Complete"
    assert kube.routes() == [f"POST {TJ_PATH}"] + [f"GET {TJ_PATH}/{name}"] * 3
    create = kube.calls[0]
    assert create.query == {"fieldValidation": "Strict"} and create.body == m


def test_submit_and_wait_rides_out_a_restarting_api_server_but_not_a_dead_one(kube):
    m = build_manifest(full_spec(), TRAIN_ARGS)
    name = m["metadata"]["name"]
    kube.script[name] = [[cond("Complete", "JobsCompleted", "done")]]
    kube.unavailable_gets = 2
    assert condition_type(submit_and_wait(m, api=kube.api(), poll_s=0.01, timeout_s=30, log=_quiet)) == "Complete"
    kube.unavailable_gets = 3
    with pytest.raises(TrainJobError, match="reading its status failed \\(503 Service Unavailable\\)"):
        submit_and_wait(m, api=kube.api(), poll_s=0.01, timeout_s=30, max_poll_errors=2, log=_quiet)


def condition_type(obj: dict) -> str:
    return obj["status"]["conditions"][-1]["type"]


def test_submit_and_wait_raises_with_the_failure_message_and_keeps_the_job(kube):
    m = build_manifest(full_spec(), TRAIN_ARGS)
    name = m["metadata"]["name"]
    kube.script[name] = [[], [cond("Failed", "JobsFailed", "jobset failed: node-1 OOMKilled")]]
    with pytest.raises(TrainJobError) as err:
        submit_and_wait(m, api=kube.api(), poll_s=0.01, timeout_s=30, log=_quiet)
    assert str(err.value) == f"TrainJob team-a/{name} failed: JobsFailed: jobset failed: node-1 OOMKilled"
    assert not any(c.method == "DELETE" for c in kube.calls)  # kept for `kubectl describe`


def test_submit_and_wait_deletes_the_job_on_timeout(kube):
    m = build_manifest(full_spec(), TRAIN_ARGS)
    name = m["metadata"]["name"]
    kube.script[name] = [[cond("Created", "JobsCreationSucceeded", "ok")]]  # never finishes
    with pytest.raises(TrainJobError, match=r"did not finish within 0.2 s: deleted it"):
        submit_and_wait(m, api=kube.api(), poll_s=0.02, timeout_s=0.2, log=_quiet)
    delete = kube.calls[-1]
    assert (delete.method, delete.path) == ("DELETE", f"{TJ_PATH}/{name}")
    assert delete.body["propagationPolicy"] == "Foreground"
    assert kube.objects == {}
    # Configurable: left running.
    kube.calls.clear()
    with pytest.raises(TrainJobError, match="left running"):
        submit_and_wait(m, api=kube.api(), poll_s=0.02, timeout_s=0.1, delete_on_timeout=False, log=_quiet)
    assert not any(c.method == "DELETE" for c in kube.calls) and len(kube.objects) == 1


def test_a_retried_step_attaches_to_its_running_job_and_replaces_a_failed_one(kube):
    m = build_manifest(full_spec(), TRAIN_ARGS)
    name = m["metadata"]["name"]
    kube.script[name] = [[cond("Complete", "JobsCompleted", "done")]]
    submit_and_wait(m, api=kube.api(), poll_s=0.01, timeout_s=30, log=_quiet)
    kube.calls.clear()
    submit_and_wait(m, api=kube.api(), poll_s=0.01, timeout_s=30, log=_quiet)  # same name again: attach
    assert [c.method for c in kube.calls] == ["POST", "GET", "GET"]
    # A failed job of the same name is deleted and created anew.
    kube.script[name] = [[cond("Failed", "JobsFailed", "preempted")]]
    kube._gets[name] = 0
    kube.calls.clear()
    with pytest.raises(TrainJobError, match="preempted"):  # the new one fails too, per the script
        submit_and_wait(m, api=kube.api(), poll_s=0.01, timeout_s=30, log=_quiet)
    assert [c.method for c in kube.calls][:4] == ["POST", "GET", "DELETE", "GET"]
    assert [c.method for c in kube.calls][4] == "POST"


def test_an_invalid_object_is_refused_by_the_server_with_its_message(kube):
    m = build_manifest(full_spec(), TRAIN_ARGS)
    m["spec"]["trainer"]["numProcPerNode"] = "auto"  # not an int32 in Trainer v2.3
    with pytest.raises(TrainJobError, match=r"422 .*numProcPerNode"):
        submit_and_wait(m, api=kube.api(), poll_s=0.01, timeout_s=1, log=_quiet)
    assert kube.objects == {}


def test_pytorchjob_flavour_waits_for_succeeded(kube):
    m = build_manifest(full_spec(flavour="pytorchjob"), TRAIN_ARGS)
    name = m["metadata"]["name"]
    kube.script[name] = [[cond("Created", "PyTorchJobCreated", "created")],
                         [cond("Running", "PyTorchJobRunning", "running")],
                         [cond("Running", "PyTorchJobRunning", "running", status="False"),
                          cond("Succeeded", "PyTorchJobSucceeded", "PyTorchJob vsearch is successfully completed.")]]
    final = submit_and_wait(m, api=kube.api(), poll_s=0.01, timeout_s=30, log=_quiet)
    assert final["status"]["conditions"][-1]["type"] == "Succeeded"
    assert kube.calls[0].path == "/apis/kubeflow.org/v1/namespaces/team-a/pytorchjobs"


# -- the train_model step -----------------------------------------------------------------


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "fake", "user": {"token": "fake-token-for-tests"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "team-a"}}],
    }))
    return path


def _settings(workdir: Path, **spec) -> str:
    base = {"namespace": "team-a", "image": "vsearch:test", "num_nodes": 2, "nproc_per_node": 1,
            "accelerator_count": 0, "cpu": "1", "memory": "2Gi", "shm_size": "",
            "volumes": [{"name": "vsearch-shared", "pvc": "vsearch-shared"}],
            "mounts": [{"volume": "vsearch-shared", "path": str(workdir)}],
            "secret_env": [{"name": "AWS_ACCESS_KEY_ID", "secret": "vsearch-object-store", "key": "AWS_ACCESS_KEY_ID",
                            "optional": True}]}
    return json.dumps({"spec": {**base, **spec}, "workdir": str(workdir / "trainjobs"), "poll_seconds": 1,
                       "timeout_seconds": 240})


def _artifact(cls, path):
    return cls(name=path.name, uri=str(path), metadata={})


@pytest.mark.slow
def test_train_model_step_trains_on_two_nodes_through_a_trainjob(tmp_path, tiny_data, monkeypatch):
    """The component's python_func with the pipeline's VSEARCH_TRAINJOB: it copies the data to
    the shared volume, creates the TrainJob, and the fake controller runs the manifest's own
    command on two "nodes" (torchrun, gloo, loopback); the published model comes back."""
    from kfp.dsl import Dataset, Metrics, Model

    from components.train_model import train_model

    kube = FakeKube(run_pods=True).start()
    try:
        shared = tmp_path / "pvc"
        monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", kube.url)))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv(tj.ENV_VAR, _settings(shared))
        model = _artifact(Model, tmp_path / "model")
        metrics = _artifact(Metrics, tmp_path / "metrics")
        train_model.python_func(data=_artifact(Dataset, tiny_data), config="tiny_image_only", model=model,
                                metrics=metrics, overrides=["train.max_steps=2"])
    finally:
        kube.stop()
    [create] = [c for c in kube.calls if c.method == "POST"]
    name = create.body["metadata"]["name"]
    assert name == derive_name("tiny_image_only", "tiny_image_only", ["train.max_steps=2"], str(tmp_path / "model"))
    run = shared / "trainjobs" / name
    assert create.body["spec"]["trainer"]["args"] == [
        "--module", "vsearch.cli", "train", "--config", "tiny_image_only", "--data", str(run / "data"),
        "--out", str(run / "model"), "--quiet", "train.max_steps=2"]
    summary = json.loads((tmp_path / "model" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2, kube.pod_logs
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert model.metadata["towers"] == ["query_image", "product_image"] and metrics.metadata["steps"] == 2.0
    assert not (shared / "trainjobs" / name).exists()  # the run folder on the PVC is cleaned up


def test_train_model_step_surfaces_a_failed_trainjob_and_publishes_nothing(tmp_path, tiny_data, monkeypatch):
    from kfp.dsl import Dataset, Metrics, Model

    from components.train_model import train_model

    kube = FakeKube().start()
    try:
        monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", kube.url)))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        # An empty namespace: the step's own, read from its service-account mount.
        ns_file = tmp_path / "namespace"
        ns_file.write_text("team-a\n")
        monkeypatch.setattr(tj.run, "SA_NAMESPACE_FILE", str(ns_file))
        monkeypatch.setenv(tj.ENV_VAR, _settings(tmp_path / "pvc", namespace=""))
        name = derive_name("tiny_image_only", "tiny_image_only", [], str(tmp_path / "model"))
        kube.script[name] = [[cond("Failed", "JobsFailed", "node-0: CUDA error: out of memory")]]
        with pytest.raises(TrainJobError, match="CUDA error: out of memory"):
            train_model.python_func(data=_artifact(Dataset, tiny_data), config="tiny_image_only",
                                    model=_artifact(Model, tmp_path / "model"), metrics=_artifact(Metrics, tmp_path / "m"))
    finally:
        kube.stop()
    assert not (tmp_path / "model").exists()
    assert kube.calls[0].path == TJ_PATH
    # Outside a pod, an empty namespace is a config error, not a guess.
    monkeypatch.setattr(tj.run, "SA_NAMESPACE_FILE", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="set trainjob.namespace in the pipeline config"):
        train_model.python_func(data=_artifact(Dataset, tiny_data), config="tiny_image_only",
                                model=_artifact(Model, tmp_path / "model"), metrics=_artifact(Metrics, tmp_path / "m"))
    # The global batch must split over the world: checked before anything is submitted.
    monkeypatch.setenv(tj.ENV_VAR, _settings(tmp_path / "pvc", num_nodes=3))
    with pytest.raises(ConfigError, match="must be divisible by num_nodes x nproc_per_node = 3"):
        train_model.python_func(data=_artifact(Dataset, tiny_data), config="tiny_image_only",
                                model=_artifact(Model, tmp_path / "model"), metrics=_artifact(Metrics, tmp_path / "m"))


# -- the pipeline config -------------------------------------------------------------------


def test_pipeline_config_wires_the_trainjob_into_the_compiled_train_step(tmp_path, default_package):
    from pipelines.config import load_pipeline_config, trainjob_settings

    cfg = load_pipeline_config(overrides=["trainjob.enabled=true", "trainjob.num_nodes=4", "gpu.accelerator_limit=8",
                                          "trainjob.namespace=team-a"])
    settings = json.loads(trainjob_settings(cfg))
    spec = TrainJobSpec.from_dict(settings["spec"])
    spec.name = "vsearch-check"
    m = build_manifest(spec, TRAIN_ARGS)
    assert m["spec"]["trainer"]["numNodes"] == 4 and m["spec"]["trainer"]["numProcPerNode"] == 8
    assert m["spec"]["trainer"]["resourcesPerNode"]["limits"] == {"cpu": "8", "memory": "32G", "nvidia.com/gpu": 8}
    pod = m["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod = pod["template"]["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"operator": "Exists", "key": "nvidia.com/gpu", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["volumes"][0] == {"name": "vsearch-shared", "persistentVolumeClaim": {"claimName": "vsearch-shared"}}
    # GPU nodes: the GPU image, and a node without CUDA stops at once (vsearch.training.device).
    assert m["spec"]["trainer"]["image"] == cfg.gpu_image
    assert {e["name"] for e in m["spec"]["trainer"]["env"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", REQUIRE_CUDA_ENV}
    assert crd_errors(m) == []
    validate_pods(m)

    # Compiled: every train step mounts the PVC, carries the settings and holds no GPU itself.
    from pipelines.compiler import compile_pipeline, load_documents

    pipeline_doc, platform_doc = load_documents(compile_pipeline("model", cfg, tmp_path))
    executors = pipeline_doc["deploymentSpec"]["executors"]
    train_execs = sorted(k for k in executors if k.startswith("exec-train-model"))
    assert len(train_execs) == 3
    for name in train_execs:
        container = executors[name]["container"]
        assert {"name": tj.ENV_VAR, "value": trainjob_settings(cfg)} in container["env"]
        assert "accelerator" not in json.dumps(container.get("resources", {}))
        k8s = platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"][name]
        assert k8s["pvcMount"][0]["mountPath"] == "/mnt/vsearch" and "tolerations" not in k8s
    # Disabled (the default): the train steps keep their GPU and get no TrainJob settings.
    plain_doc, _ = load_documents(default_package("model"))  # compiled once per session (tests/conftest.py)
    plain = plain_doc["deploymentSpec"]["executors"]["exec-train-model"]["container"]
    assert "accelerator" in json.dumps(plain["resources"])
    assert tj.ENV_VAR not in json.dumps(plain.get("env", []))


def test_a_bad_trainjob_section_fails_at_compile_time():
    from pipelines.config import load_pipeline_config

    with pytest.raises(ConfigError, match="num_nodes must be an integer >= 1"):
        load_pipeline_config(overrides=["trainjob.enabled=true", "trainjob.num_nodes=0"])
    with pytest.raises(ConfigError, match=r"nproc_per_node \(3\) must equal accelerator_count \(1\)"):
        load_pipeline_config(overrides=["trainjob.enabled=true", "trainjob.nproc_per_node=3"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_pipeline_config(overrides=["trainjob.gpus=2"])
    # Disabled (the default): nothing is checked or wired.
    assert load_pipeline_config().trainjob.enabled is False
