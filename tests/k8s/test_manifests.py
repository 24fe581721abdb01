"""k8s/: every overlay renders with kustomize and every document validates.

Built-in kinds are validated by kubernetes-validate (strict: unknown fields rejected) at a
pinned Kubernetes version; the Milvus CR against the vendored Milvus Operator CRD subset
(tests/k8s/schemas/), the InferenceService against vsearch.rollout.kserve's schema of the
published KServe CRD plus the PodSpec fields its predictor inlines. Then the policies the
project holds itself to: resources, probes, restricted security contexts, images from
vsearch/images.py, Secrets by documented reference only, default-deny networking with an
allow policy per workload, RBAC without wildcards, GPU tolerations in prod.
"""

from __future__ import annotations

import copy
import functools
import json
import posixpath
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
DOCS = ROOT / "docs" / "kubernetes.md"
OVERLAYS = ["dev", "prod"]
K8S_VERSION = "1.30"  # the oldest minor we support; CronJob.timeZone and PSA labels are GA there
PROJECT_IMAGE_NAME = "ghcr.io/vsearch-ml/vsearch"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "CronJob", "InferenceService"}
CRD_KINDS = {("milvus.io/v1beta1", "Milvus"), ("serving.kserve.io/v1beta1", "InferenceService")}
# PodSpec fields our predictor uses beyond vsearch.rollout.kserve.ISVC_SCHEMA (KServe's
# PredictorSpec inlines corev1.PodSpec, so the CRD accepts each with the core type).
PREDICTOR_PODSPEC_FIELDS = ("automountServiceAccountToken", "securityContext", "initContainers", "volumes",
                            "nodeSelector", "tolerations")

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed: cannot render k8s/ overlays")
    return path


@functools.lru_cache(maxsize=None)
def _render_text(target: str) -> str:
    result = subprocess.run([_kubectl(), "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {target} failed:\n{result.stderr}"
    return result.stdout


def render(target: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(_render_text(target)) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(doc: dict) -> dict:
    kind = doc["kind"]
    if kind in ("Deployment", "StatefulSet"):
        return doc["spec"]["template"]["spec"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind == "InferenceService":
        return doc["spec"]["predictor"]
    raise KeyError(kind)


def pod_labels(doc: dict) -> dict:
    kind = doc["kind"]
    if kind in ("Deployment", "StatefulSet"):
        return doc["spec"]["template"]["metadata"]["labels"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    # KServe labels every predictor pod with the InferenceService's name.
    return {"serving.kserve.io/inferenceservice": doc["metadata"]["name"]}


def containers(doc: dict, init: bool = True) -> list[dict]:
    spec = pod_spec(doc)
    return (spec.get("initContainers", []) if init else []) + spec["containers"]


# ------------------------------------------------------------------------------- validators
@functools.lru_cache(maxsize=None)
def _registry():
    import kubernetes_validate.utils as kv
    from referencing import Registry, Resource

    versions = [v for v in kv.all_versions() if kv.major_minor(v) <= K8S_VERSION]
    definitions = kv.schema_contents(f"kubernetes-json-schema/v{versions[-1]}-local-strict/_definitions.json", K8S_VERSION)
    return Resource.from_contents(definitions) @ Registry()


def isvc_schema() -> dict:
    """vsearch.rollout.kserve.ISVC_SCHEMA + the PodSpec fields of the predictor we use."""
    from vsearch.rollout import kserve

    schema = copy.deepcopy(kserve.ISVC_SCHEMA)
    pod = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.api.core.v1.PodSpec/properties/"
    predictor = schema["properties"]["spec"]["properties"]["predictor"]["properties"]
    for field in PREDICTOR_PODSPEC_FIELDS:
        predictor[field] = {"$ref": pod + field}
    return schema


def validate(doc: dict) -> None:
    import jsonschema
    import kubernetes_validate

    key = (doc["apiVersion"], doc["kind"])
    if key == ("milvus.io/v1beta1", "Milvus"):
        schema = json.loads((SCHEMAS / "milvus.io_v1beta1_milvus.json").read_text())
        jsonschema.Draft202012Validator(schema, registry=_registry()).validate(doc)
    elif key == ("serving.kserve.io/v1beta1", "InferenceService"):
        jsonschema.Draft202012Validator(isvc_schema(), registry=_registry()).validate(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# ------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_every_document_validates(overlay):
    docs = render(f"overlays/{overlay}")
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Milvus", "StatefulSet", "Deployment", "Service",
            "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "InferenceService", "CronJob",
            "ConfigMap"} <= kinds
    for doc in docs:
        try:
            validate(doc)
        except Exception as err:  # name the document: the validators do not
            raise AssertionError(f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {err}") from err
        # Milvus and its policies live in vsearch-milvus (k8s/milvus: Pod Security baseline there).
        want = "vsearch-milvus" if doc["kind"] == "Milvus" or doc["metadata"]["name"] == "allow-milvus" else "vsearch"
        ns = doc["metadata"].get("namespace")
        assert doc["kind"] == "Namespace" or ns == want or (doc["kind"] == "NetworkPolicy" and ns == "vsearch-milvus" and
                                                            doc["metadata"]["name"] in ("default-deny-all", "allow-dns-egress")), \
            f"{overlay}: {doc['kind']}/{doc['metadata']['name']} in namespace {ns}"


def test_validators_reject_what_the_cluster_would_reject():
    """The validation above can fail: a typo, a wrong enum, an unknown predictor field."""
    import jsonschema
    import kubernetes_validate

    docs = render("overlays/prod")
    deployment = copy.deepcopy(one(docs, "Deployment", "vsearch-search"))
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # typo of resources
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    milvus = copy.deepcopy(one(docs, "Milvus", "vsearch"))
    milvus["spec"]["mode"] = "distributed"
    with pytest.raises(jsonschema.ValidationError):
        validate(milvus)
    milvus = copy.deepcopy(one(docs, "Milvus", "vsearch"))
    milvus["spec"]["dependencies"]["storage"]["secretref"] = "x"
    with pytest.raises(jsonschema.ValidationError):
        validate(milvus)
    isvc = copy.deepcopy(one(docs, "InferenceService", "vsearch-query-encoder"))
    isvc["spec"]["predictor"]["tolerations"][0]["effect"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validate(isvc)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inference_service_has_the_shape_vsearch_rollout_writes(overlay):
    """Same name, namespace, service account, container, port, probe, env and args prefix as
    `vsearch rollout`; without our PodSpec extras it passes the rollout's own validator."""
    from vsearch.rollout import kserve
    from vsearch.rollout.writer import load_rollout_defaults

    isvc = one(render(f"overlays/{overlay}"), "InferenceService", "vsearch-query-encoder")
    k = load_rollout_defaults().kserve
    generated = kserve.inference_service(
        name=k.name, namespace=k.namespace, image=k.image, storage_uri="s3://bucket/model",
        model_version="v1", canary_percent=1, min_replicas=k.min_replicas, max_replicas=k.max_replicas,
        service_account=k.service_account,
        args=[str(a).format(alias="vsearch_serving", model_version="v1") for a in k.args],
    )
    ours, theirs = isvc["spec"]["predictor"], generated["spec"]["predictor"]
    assert "canaryTrafficPercent" not in ours  # a canary is the rollout's business
    assert (isvc["metadata"]["name"], isvc["metadata"]["namespace"]) == (generated["metadata"]["name"], generated["metadata"]["namespace"])
    assert ours["serviceAccountName"] == theirs["serviceAccountName"]
    c, g = ours["containers"][0], theirs["containers"][0]
    assert (c["name"], c["ports"], c["readinessProbe"]["httpGet"]) == (g["name"], g["ports"], g["readinessProbe"]["httpGet"])
    assert c["args"][: len(g["args"])] == g["args"], "k8s args must extend the rollout's args"
    assert [e["name"] for e in c["env"][:2]] == [e["name"] for e in g["env"]] == ["STORAGE_URI", "VSEARCH_MODEL_VERSION"]
    assert re.match(r"^(s3|gs|pvc|https)://", c["env"][0]["value"])  # the storage initializer's schemes
    stripped = copy.deepcopy(isvc)
    for field in PREDICTOR_PODSPEC_FIELDS:
        stripped["spec"]["predictor"].pop(field, None)
    kserve.validate_manifest(stripped, K8S_VERSION)


def _argv_ok(main, argv, monkeypatch) -> None:
    """Parse ``argv`` with the stage's real argparse, stopping before any connection."""
    import vsearch.indexing.config as index_config

    class Parsed(Exception):
        pass

    def stop(*_a, **_k):
        raise Parsed

    monkeypatch.setattr(index_config, "load_index_config", stop)
    with pytest.raises(Parsed):
        main(argv)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_command_lines_parse_with_the_real_cli(overlay, monkeypatch):
    from vsearch.serving.app import main as serve_main

    docs = render(f"overlays/{overlay}")
    search = one(docs, "Deployment", "vsearch-search")["spec"]["template"]["spec"]["containers"][0]
    assert search["command"] == ["vsearch"] and search["args"][0] == "serve"
    _argv_ok(serve_main, search["args"][1:], monkeypatch)
    encoder = one(docs, "InferenceService", "vsearch-query-encoder")["spec"]["predictor"]["containers"][0]
    assert encoder["args"][:2] == ["vsearch", "serve"]
    _argv_ok(serve_main, encoder["args"][2:], monkeypatch)
    with pytest.raises(SystemExit):
        serve_main([*search["args"][1:], "--no-such-flag"])  # the parse above can fail


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_search_service_serves_the_champion_the_registry_names(overlay, tmp_path, capsys):
    """The search pods fetch the registry's champion (`vsearch registry fetch`) from the registry
    the release commands promote into and the schedule job reads, and serve that folder. Before,
    they downloaded a fixed s3://.../champion that nothing ever wrote."""
    from vsearch.cli import main

    docs = render(f"overlays/{overlay}")
    spec = one(docs, "Deployment", "vsearch-search")["spec"]["template"]["spec"]
    [fetch] = [c for c in spec["initContainers"] if c["name"] == "fetch-model"]
    search = spec["containers"][0]
    settings = one(docs, "ConfigMap", fetch["envFrom"][0]["configMapRef"]["name"])["data"]
    cron = pod_spec(one(docs, "CronJob", "vsearch-schedule"))["containers"][0]
    schedule = one(docs, "ConfigMap", cron["envFrom"][0]["configMapRef"]["name"])["data"]
    assert fetch["command"] == ["vsearch"] and fetch["args"][:2] == ["registry", "fetch"]
    assert settings["VSEARCH_REGISTRY"] == schedule["PARAM_REGISTRY"]  # $VSEARCH_REGISTRY is the CLI's --store default
    assert not [k for k in settings if k.endswith("MODEL_URI")], "a fixed model path that nothing writes"
    out = fetch["args"][fetch["args"].index("--out") + 1]
    assert search["args"][search["args"].index("--model") + 1] == out
    # ...and follows the same registry's promotions and rollbacks while it runs.
    assert _expand(search["args"][search["args"].index("--champion-from") + 1], settings) == settings["VSEARCH_REGISTRY"]
    # The real CLI takes the command line: an empty registry is one line, exit 2 (no champion yet).
    assert main([fetch["args"][0], "--store", str(tmp_path / "registry"), *fetch["args"][1:]]) == 2
    assert "no champion" in capsys.readouterr().err
    # The copy is published by a rename inside the mounted volume, never over the mount point itself.
    [mount] = [m for m in fetch["volumeMounts"] if out.startswith(m["mountPath"] + "/")]
    assert not mount.get("readOnly") and posixpath.dirname(out) == mount["mountPath"]
    assert fetch["image"] == search["image"]


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], value)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_recurring_run_job_runs_a_valid_schedule_command(overlay):
    """The CronJob's command line, with the ConfigMap's values, is accepted by `vsearch pipeline schedule`."""
    from pipelines.cli import _parser
    from pipelines.client import validate_cron

    docs = render(f"overlays/{overlay}")
    cronjob = one(docs, "CronJob", "vsearch-schedule")
    container = pod_spec(cronjob)["containers"][0]
    [ref] = container["envFrom"]
    settings = one(docs, "ConfigMap", ref["configMapRef"]["name"])["data"]
    argv = [_expand(a, settings) for a in container["args"]]
    assert container["command"] == ["vsearch"] and argv[0] == "pipeline"  # `vsearch pipeline` -> pipelines.cli
    args = _parser().parse_args(argv[1:])
    assert args.command == "schedule" and args.name == settings["PIPELINE"]
    assert validate_cron(args.cron) == settings["CRON"]
    assert args.service_account == "pipeline-runner" and one(docs, "ServiceAccount", "pipeline-runner")
    assert settings["KF_PIPELINES_ENDPOINT"].startswith("http")  # kfp.Client's own variable
    assert pod_spec(cronjob)["serviceAccountName"] == "scheduler"
    [token] = [v for v in pod_spec(cronjob)["volumes"] if v["name"] == "kfp-token"]
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_have_resources_probes_and_restricted_security(overlay):
    for doc in render(f"overlays/{overlay}"):
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        spec = pod_spec(doc)
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, f"{where}: pod securityContext.runAsNonRoot"
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp RuntimeDefault"
        assert spec.get("automountServiceAccountToken") is False, f"{where}: automountServiceAccountToken must be false"
        for c in containers(doc):
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(part, {})), f"{where}/{c['name']}: resources.{part} cpu+memory"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, f"{where}/{c['name']}: allowPrivilegeEscalation"
            assert sc.get("readOnlyRootFilesystem") is True, f"{where}/{c['name']}: readOnlyRootFilesystem"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}/{c['name']}: drop ALL capabilities"
            assert sc.get("runAsNonRoot", True) is True
        if doc["kind"] in ("Deployment", "StatefulSet", "InferenceService"):  # servers
            main = spec["containers"][0]
            assert "readinessProbe" in main, f"{where}: readiness probe"
            if doc["kind"] != "InferenceService":  # Knative's queue-proxy watches liveness there
                assert "livenessProbe" in main, f"{where}: liveness probe"
    search = one(render(f"overlays/{overlay}"), "Deployment", "vsearch-search")["spec"]["template"]["spec"]["containers"][0]
    assert search["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert search["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_project_image_comes_from_vsearch_images():
    from vsearch.images import IMAGE

    name, tag = IMAGE.rsplit(":", 1)
    assert name == PROJECT_IMAGE_NAME
    # The base writes IMAGE literally, and each overlay pins the same tag.
    base_refs = set(re.findall(rf"image:\s*({re.escape(PROJECT_IMAGE_NAME)}\S*)", "".join(
        p.read_text() for p in (K8S / "base").glob("*.yaml"))))
    assert base_refs == {IMAGE}
    for overlay in OVERLAYS:
        kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        pinned = [i for i in kustomization.get("images", []) if i["name"] == PROJECT_IMAGE_NAME]
        assert pinned and all(i.get("newTag") == tag and i.get("newName", name) == name for i in pinned), overlay
        for doc in render(f"overlays/{overlay}"):
            if doc["kind"] in WORKLOAD_KINDS:
                for c in containers(doc):
                    image = c["image"]
                    ref_name, _, ref_tag = image.rpartition(":")
                    assert ref_tag and "/" not in ref_tag and ref_tag != "latest", f"{overlay}: {image} must be pinned by tag"
                    if ref_name == PROJECT_IMAGE_NAME:
                        assert image == IMAGE


def _documented_secrets() -> set[tuple[str, str]]:
    """(secret, key) pairs from the table in docs/kubernetes.md: | `name` | `key` | ... |"""
    pairs = set()
    for line in DOCS.read_text().splitlines():
        m = re.match(r"^\|\s*`([a-z0-9-]+)`\s*\|\s*`([A-Za-z0-9_.-]+)`\s*\|", line)
        if m:
            pairs.add((m.group(1), m.group(2)))
    return pairs


def _secret_refs(node, found: set, milvus: bool = False) -> set:
    if isinstance(node, dict):
        if "secretKeyRef" in node:
            found.add((node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]))
        if "secretRef" in node and isinstance(node["secretRef"], dict):  # envFrom
            found.add((node["secretRef"]["name"], "*"))
        if isinstance(node.get("secret"), dict) and "secretName" in node["secret"]:  # volume
            found.add((node["secret"]["secretName"], "*"))
        for value in node.values():
            _secret_refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _secret_refs(value, found)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_reference_is_documented(overlay):
    documented = _documented_secrets()
    names = {n for n, _ in documented}
    assert documented, "docs/kubernetes.md has no Secrets table"
    docs = render(f"overlays/{overlay}")
    refs = _secret_refs(docs, set())
    milvus = one(docs, "Milvus", "vsearch")
    storage = milvus["spec"]["dependencies"]["storage"]
    refs |= {(storage["secretRef"], "accesskey"), (storage["secretRef"], "secretkey")}
    for role in by_kind(docs, "Role"):
        for rule in role["rules"]:
            if "secrets" in rule["resources"]:
                refs |= {(n, "*") for n in rule.get("resourceNames", [])}
    assert refs
    for name, key in sorted(refs):
        assert (name in names) if key == "*" else ((name, key) in documented), \
            f"{overlay}: Secret {name}/{key} is referenced but not documented in docs/kubernetes.md"
    assert not by_kind(docs, "Secret"), "Secrets are created by an operator, never rendered from k8s/"


def test_no_secret_values_anywhere_in_k8s():
    for path in sorted(K8S.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text()
        for doc in yaml.safe_load_all(text):
            if not isinstance(doc, dict):
                continue
            if doc.get("kind") == "Secret":
                assert not ({"data", "stringData"} & set(doc)), f"{path}: a Secret with values"
            assert "secretGenerator" not in doc, f"{path}: secretGenerator is forbidden (Secrets by reference only)"


def _selects(selector: dict, labels: dict) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        op, key, values = expr["operator"], expr["key"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_default_deny_and_an_allow_policy_for_every_workload(overlay):
    docs = render(f"overlays/{overlay}")
    policies = by_kind(docs, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "no default-deny (ingress + egress) NetworkPolicy"
    allows = [p for p in policies if p["spec"]["podSelector"] != {} and (p["spec"].get("ingress") or p["spec"].get("egress"))]
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            labels = pod_labels(doc)
            assert any(_selects(p["spec"]["podSelector"], labels) for p in allows), \
                f"{overlay}: no allow NetworkPolicy selects the pods of {doc['kind']}/{doc['metadata']['name']} ({labels})"
    # the flows the service depends on
    # A pod is (namespace, labels); a peer without namespaceSelector means the policy's namespace.
    search = ("vsearch", {"app.kubernetes.io/name": "vsearch-search"})
    milvus_pod = ("vsearch-milvus", {"app.kubernetes.io/instance": "vsearch", "app.kubernetes.io/name": "milvus"})
    redis_pod = ("vsearch", one(docs, "StatefulSet", "vsearch-redis")["spec"]["template"]["metadata"]["labels"])
    step_pod = ("vsearch", {"pipelines.kubeflow.org/v2_component": "true"})
    feature_server = ("vsearch", {"app.kubernetes.io/name": "feast-feature-server"})

    def peer_selects(peer: dict, policy_ns: str, pod: tuple) -> bool:
        ns, labels = pod
        if "namespaceSelector" in peer:
            ns_ok = _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": ns})
        else:
            ns_ok = ns == policy_ns
        return "ipBlock" not in peer and ns_ok and _selects(peer.get("podSelector", {}), labels)

    def applies(p: dict, pod: tuple) -> bool:
        return p["metadata"]["namespace"] == pod[0] and _selects(p["spec"]["podSelector"], pod[1])

    def egress_to(src: tuple, dst: tuple, port: int) -> bool:
        return any(applies(p, src) and any(
            any(peer_selects(peer, p["metadata"]["namespace"], dst) for peer in rule.get("to", []))
            and any(pt["port"] == port for pt in rule.get("ports", [{"port": port}]))
            for rule in p["spec"].get("egress", [])) for p in allows)

    def ingress_from(dst: tuple, src: tuple, port: int) -> bool:
        return any(applies(p, dst) and any(
            any(peer_selects(peer, p["metadata"]["namespace"], src) for peer in rule.get("from", []))
            and any(pt["port"] == port for pt in rule.get("ports", [{"port": port}]))
            for rule in p["spec"].get("ingress", [])) for p in allows)

    for src, dst, port in [(search, milvus_pod, 19530), (search, redis_pod, 6379), (step_pod, milvus_pod, 19530),
                           (step_pod, redis_pod, 6379), (feature_server, redis_pod, 6379)]:
        assert egress_to(src, dst, port) and ingress_from(dst, src, port), f"{overlay}: {src} -> {dst}:{port} not allowed both ways"
    assert not egress_to(search, ("vsearch", {"app.kubernetes.io/name": "something-else"}), 5432)
    # Namespaces matter: a Milvus-labelled pod in vsearch itself is not what search may reach.
    assert not egress_to(search, ("vsearch", milvus_pod[1]), 19530)
    assert not egress_to(feature_server, milvus_pod, 19530)
    assert any(_selects(p["spec"]["podSelector"], search[1]) and any(
        "namespaceSelector" in peer for rule in p["spec"].get("ingress", []) for peer in rule.get("from", []))
        for p in allows), "search must accept traffic from the ingress gateway namespace"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_is_least_privilege(overlay):
    docs = render(f"overlays/{overlay}")
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    for role in by_kind(docs, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"{role['metadata']['name']}: wildcard in {field}"
    for binding in by_kind(docs, "RoleBinding"):
        assert binding["roleRef"]["name"] != "cluster-admin" and binding["roleRef"]["kind"] == "Role"
        for s in binding["subjects"]:
            assert s["kind"] == "ServiceAccount" and one(docs, "ServiceAccount", s["name"])
    runner = one(docs, "Role", "pipeline-runner")

    def grants(role, group, resource, verb):
        return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] and not r.get("resourceNames")
                   for r in role["rules"])

    # Exactly what the TrainJob launcher does (vsearch.training.trainjob.RBAC_RULES), nothing more.
    from vsearch.training.trainjob import RBAC_RULES

    need = RBAC_RULES["trainjob"]
    for verb in need["verbs"]:
        assert grants(runner, need["apiGroup"], need["resource"], verb), f"pipeline-runner cannot {verb} {need['resource']}"
    granted = {v for r in runner["rules"] if need["apiGroup"] in r["apiGroups"] for v in r["verbs"]}
    assert granted == set(need["verbs"]), f"pipeline-runner has more than the launcher needs on {need['apiGroup']}: {granted}"
    assert grants(runner, "", "pods/log", "get")
    assert not grants(runner, "", "secrets", "get"), "pipeline-runner may read named Secrets only"
    assert not grants(runner, "", "pods", "create")
    bound = {s["name"] for b in by_kind(docs, "RoleBinding") for s in b["subjects"]}
    for sa in ("search", "feature-server"):
        assert one(docs, "ServiceAccount", sa).get("automountServiceAccountToken") is False and sa not in bound


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_workloads_tolerate_the_gpu_taint(overlay):
    docs = render(f"overlays/{overlay}")
    gpu_workloads = []
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS and any(
                "nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in containers(doc)):
            gpu_workloads.append(doc["metadata"]["name"])
            spec = pod_spec(doc)
            assert any(t.get("key") == "nvidia.com/gpu" and t.get("effect") == "NoSchedule" for t in spec.get("tolerations", [])), doc["metadata"]["name"]
            assert spec.get("nodeSelector"), f"{doc['metadata']['name']}: GPU pods need the GPU node pool's nodeSelector"
    assert gpu_workloads == (["vsearch-query-encoder"] if overlay == "prod" else [])
    if overlay == "prod":
        encoder = one(docs, "InferenceService", "vsearch-query-encoder")["spec"]["predictor"]["containers"][0]
        assert encoder["args"][-2:] == ["--device", "cuda"]


def test_dev_is_small_and_prod_is_replicated():
    dev, prod = render("overlays/dev"), render("overlays/prod")
    assert one(dev, "Milvus", "vsearch")["spec"]["mode"] == "standalone"
    assert one(prod, "Milvus", "vsearch")["spec"]["mode"] == "cluster"
    assert "standalone" not in one(prod, "Milvus", "vsearch")["spec"]["components"]
    assert one(dev, "Deployment", "vsearch-search")["spec"]["replicas"] == 1
    assert one(dev, "HorizontalPodAutoscaler", "vsearch-search")["spec"]["maxReplicas"] <= 2
    hpa = one(prod, "HorizontalPodAutoscaler", "vsearch-search")["spec"]
    assert hpa["minReplicas"] >= 3 and hpa["maxReplicas"] > hpa["minReplicas"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert {p["metadata"]["name"] for p in by_kind(prod, "PodDisruptionBudget")} >= {"vsearch-search", "feast-feature-server"}
    redis = one(prod, "StatefulSet", "vsearch-redis")["spec"]
    assert redis["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert not any(v["name"] == "data" for v in redis["template"]["spec"].get("volumes", []))
    assert one(dev, "CronJob", "vsearch-schedule")["spec"].get("suspend") is True
    assert not one(prod, "CronJob", "vsearch-schedule")["spec"].get("suspend")
    auth = one(prod, "Milvus", "vsearch")["spec"]["config"]["common"]["security"]
    assert auth["authorizationEnabled"] is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_map_references_resolve(overlay):
    """Generated ConfigMap names carry a hash: every reference (also in the CRDs) must follow it."""
    docs = render(f"overlays/{overlay}")
    names = {d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")}
    refs = set()
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            for c in containers(doc):
                refs |= {e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e}
            refs |= {v["configMap"]["name"] for v in pod_spec(doc).get("volumes", []) if "configMap" in v}
    assert refs and refs <= names, f"{overlay}: dangling ConfigMap references {sorted(refs - names)}"


def test_feast_config_is_the_feature_repo_one():
    """The cluster's copy is feature_repo's with three keys read from the pods' environment."""
    from vsearch.features import repo as feature_repo

    cluster = (K8S / "base" / "feast" / "feature_store.yaml").read_text()
    shipped = yaml.safe_load((ROOT / "feature_repo" / "feature_store.yaml").read_text())
    pod_env = {"VSEARCH_FEAST_PROJECT": shipped["project"], "VSEARCH_FEAST_REGISTRY": shipped["registry"]["path"],
               "VSEARCH_FEAST_ONLINE_STORE": yaml.safe_dump(shipped["online_store"], default_flow_style=True).strip()}
    assert feature_repo.resolve(cluster, env=pod_env) == shipped
    assert all(f"${{{var}}}" in cluster for var in feature_repo.ENV_KEYS)
    data = one(render("overlays/prod"), "ConfigMap", next(
        d["metadata"]["name"] for d in render("overlays/prod") if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("feast-repo")))
    assert "${VSEARCH_FEAST_ONLINE_STORE}" in data["data"]["feature_store.yaml"]


# --------------------------------------------------------------------------- secret scanning
SCANNED = [K8S, ROOT / "pipelines" / "configs", ROOT / "src" / "vsearch" / "configs", ROOT / "docs", ROOT / "feature_repo",
           ROOT / "README.md"]


def test_repository_has_no_secret_looking_values():
    from secret_scan import scan_paths

    findings = scan_paths([p for p in SCANNED if p.exists()])
    assert not findings, "\n".join(f"{f.path}:{f.line}: {f.rule}: {f.text}" for f in findings)


@pytest.mark.parametrize("planted, rule", [
    ("stringData:\n  password: s3cr3t-Value-42\n", "literal value for 'password'"),
    ("env:\n  - name: VSEARCH_MILVUS_TOKEN\n    value: x\nconfig: {token: \"root:Milvus12345\"}\n", "literal value for 'token'"),
    ("aws_secret_access_key = wJalrXUtnFEMIK7MDENGbPxRfiCY\n", "literal value for 'aws_secret_access_key'"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n", "private-key PEM header"),
    ("key id: AKIAIOSFODNN7EXAMPL3\n", "AWS access key id"),
    ('VSEARCH_FEAST_ONLINE_STORE=\'{type: redis, connection_string: "r:6379,password=hunter2hunter2"}\'\n',
     "literal value for 'password'"),
])
def test_secret_scanner_flags_a_planted_secret(tmp_path, planted, rule):
    from secret_scan import scan_paths

    (tmp_path / "ok.yaml").write_text("valueFrom:\n  secretKeyRef: {name: redis-auth, key: password}\n")
    (tmp_path / "planted.yaml").write_text("# example\n" + planted)
    findings = scan_paths([tmp_path])
    assert [f.path for f in findings] and {f.path for f in findings} == {str(tmp_path / "planted.yaml")}
    assert rule in {f.rule for f in findings}
    assert all(f.line >= 2 for f in findings)


@pytest.mark.parametrize("reference", [
    "password: $(REDIS_PASSWORD)",
    "token: ${VSEARCH_MILVUS_TOKEN}",
    'kubectl create secret generic milvus-credentials --from-literal=token="root:<password>"',
    "--from-literal=password=\"$(openssl rand -hex 32)\"",
    "secretRef: milvus-object-store",
    "token_env: VSEARCH_MILVUS_TOKEN",
    "env: {token: VSEARCH_MILVUS_TOKEN}",
    "AWS_SECRET_ACCESS_KEY: AWS_SECRET_ACCESS_KEY",
    "authorizationEnabled: true",
])
def test_secret_scanner_passes_references(reference):
    from secret_scan import scan_text

    assert scan_text(reference) == []


# ------------------------------------------------------------------------------ pod security
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespaces_enforce_restricted_pod_security_where_the_workloads_allow_it(overlay):
    """vsearch (our workloads, pipeline steps, TrainJobs): restricted. vsearch-milvus: baseline,
    because the Milvus Operator's init container cannot meet restricted (documented)."""
    namespaces = {n["metadata"]["name"]: n["metadata"]["labels"] for n in by_kind(render(f"overlays/{overlay}"), "Namespace")}
    assert set(namespaces) == {"vsearch", "vsearch-milvus"}
    for name, enforce in (("vsearch", "restricted"), ("vsearch-milvus", "baseline")):
        labels = namespaces[name]
        assert labels["pod-security.kubernetes.io/enforce"] == enforce, f"{overlay}: {name}"
        assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"
        assert labels["pod-security.kubernetes.io/enforce-version"] == f"v{K8S_VERSION}"
    assert "vsearch-milvus" in DOCS.read_text() and "baseline" in DOCS.read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_pod_meets_restricted_pod_security(overlay):
    from pod_security import restricted_violations

    docs = render(f"overlays/{overlay}")
    checked = 0
    for doc in docs:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        spec = pod_spec(doc)
        if doc["kind"] == "InferenceService":  # the predictor inlines the PodSpec among its own fields
            spec = {k: v for k, v in spec.items() if k not in ("minReplicas", "maxReplicas", "serviceAccountName")}
        assert restricted_violations({"spec": spec}) == [], f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        for c in containers(doc):  # each container says it itself, not only through the pod
            assert c["securityContext"].get("seccompProfile") == {"type": "RuntimeDefault"}, f"{doc['metadata']['name']}/{c['name']}"
        checked += 1
    assert checked == 5
    # The operator copies components.securityContext into the Milvus container's securityContext.
    milvus = one(docs, "Milvus", "vsearch")["spec"]["components"]
    assert milvus["runAsNonRoot"] is True
    assert restricted_violations({"spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 1000}, "containers": [
        {"name": "milvus", "securityContext": milvus["securityContext"]}]}}) == []
    # The checker can fail.
    search = copy.deepcopy(pod_spec(one(docs, "Deployment", "vsearch-search")))
    search["containers"][0]["securityContext"]["capabilities"] = {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    search["volumes"].append({"name": "host", "hostPath": {"path": "/var/run"}})
    assert restricted_violations({"spec": search}) == ["volume host: type ['hostPath']", "search: capabilities.add"]


# --------------------------------------------------------------------------------- egress
def _object_storage_cidr(overlay: str) -> str:
    doc = yaml.safe_load((K8S / "overlays" / overlay / "network-egress.yaml").read_text())
    return doc["data"]["objectStorageCIDR"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_egress_names_its_destinations_and_object_storage_comes_from_the_overlay(overlay):
    import ipaddress

    docs = render(f"overlays/{overlay}")
    cidr = _object_storage_cidr(overlay)
    assert not any(d["metadata"]["name"] == "network-egress" for d in docs), "local-config: never applied"
    labelled = 0
    for policy in by_kind(docs, "NetworkPolicy"):
        name = policy["metadata"]["name"]
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to"), f"{overlay}: {name}: an egress rule to every address"
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                    assert net.prefixlen >= 8, f"{overlay}: {name}: egress to {net} (open to the internet)"
                    assert [p["port"] for p in rule.get("ports", [])], f"{overlay}: {name}: ipBlock egress without ports"
        if policy["metadata"].get("labels", {}).get("vsearch.io/egress") == "object-storage":
            labelled += 1
            first = policy["spec"]["egress"][0]
            assert first == {"to": [{"ipBlock": {"cidr": cidr}}], "ports": [{"protocol": "TCP", "port": 443}]}, name
    # search, query encoder, feature server, pipeline steps, trainjob pods, the scheduler (it reads the
    # champion registry) (vsearch); milvus (vsearch-milvus)
    assert labelled == 7
    assert "OBJECT_STORAGE_CIDR" not in _render_text(f"overlays/{overlay}")
    text = DOCS.read_text()
    assert "network-egress.yaml" in text and "objectStorageCIDR" in text, "docs/kubernetes.md must say where to set it"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_schedules_import_fresh_data_and_monitoring_is_scheduled_too(overlay, default_package):
    """Issue 21 item 4: the shipped schedule ran `training` (it generates the synthetic benchmark)
    and nothing scheduled the monitoring pipeline. Each container's --params must type-check
    against its compiled pipeline's inputs (as `schedule` checks them before any request)."""
    from pipelines.cli import CHAMPION_PARAMS, _parser, typed_params
    from pipelines.compiler import check_package

    docs = render(f"overlays/{overlay}")
    cronjob = one(docs, "CronJob", "vsearch-schedule")
    scheduled = {}
    for container in containers(cronjob):
        [ref] = container["envFrom"]
        settings = one(docs, "ConfigMap", ref["configMapRef"]["name"])["data"]
        args = _parser().parse_args([_expand(a, settings) for a in container["args"]][1:])
        spec, _ = check_package(default_package(args.name))  # compiled once per session (tests/conftest.py)
        params = dict(p.split("=", 1) for p in args.param)
        if args.champion_from:  # the champion's URIs are read from the registry when the job runs
            params.update({name: f"{args.champion_from}#champion" for name in CHAMPION_PARAMS})
        scheduled[args.name] = (args.schedule_name, typed_params(spec, params), args.champion_from)
    assert set(scheduled) == {"training-import", "monitoring"}
    training_name, training, _ = scheduled["training-import"]
    assert training["data_uri"].startswith("s3://")
    _, monitoring, champion_from = scheduled["monitoring"]
    # The monitor checks the registry's champion (the registry the training schedule promotes
    # into), not fixed paths that nothing writes (before: MONITORING_MODEL_URI/REFERENCE_URI).
    assert champion_from == training["registry"] and champion_from.startswith("s3://")
    assert monitoring["data_uri"].startswith("s3://")
    # Off as shipped (MONITORING_RETRAIN_SCHEDULE= in k8s/base); a site that turns it on names the
    # training schedule. (Was `in ("", training_name)`: either value passed, so the default went unchecked.)
    assert monitoring["retrain_schedule"] == "" and training_name
