"""KServe ``InferenceService`` (serving.kserve.io/v1beta1) for one arm's query encoder + search.

The rollout writes one InferenceService per A/B arm (`vsearch.rollout.writer.build_manifests`):
KServe's own canary (``canaryTrafficPercent``) splits requests at random, not users, so it
cannot hold a user on one arm. ``canary_percent`` stays available for plain model updates.
The container runs as a custom container: KServe's storage initializer downloads
``STORAGE_URI`` to ``/mnt/models`` before the container starts; readiness is ``/readyz``
(model loaded and its alias on a collection that model built).

`validate_manifest` checks a manifest structurally: the KServe fields we use against the
published v1beta1 CRD's OpenAPI types (encoded below, unknown fields rejected so a typo
cannot be pruned away silently by the API server), and ``metadata`` plus every container
against the Kubernetes core schemas shipped with ``kubernetes-validate`` (strict: unknown
fields rejected). kubernetes-validate itself has no KServe schema (it raises
SchemaNotFoundError for the CRD kind), hence this composition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
K8S_VERSION = "1.32"
_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/"

# The subset of the published CRD (kserve/config/crd/full/serving.kserve.io_inferenceservices.yaml,
# v1beta1 PredictorSpec / ModelSpec) that our manifests use, with the CRD's types and bounds.
ISVC_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": API_VERSION},
        "kind": {"const": KIND},
        "metadata": {
            "allOf": [
                {"$ref": _DEFS + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
                {"type": "object", "required": ["name"]},
            ]
        },
        "spec": {
            "type": "object",
            "required": ["predictor"],
            "additionalProperties": False,
            "properties": {
                "predictor": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "canaryTrafficPercent": {"type": "integer", "minimum": 0, "maximum": 100},
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 0},
                        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
                        "scaleTarget": {"type": "integer", "minimum": 1},
                        "timeout": {"type": "integer", "minimum": 1},
                        "serviceAccountName": {"type": "string"},
                        "containers": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"$ref": _DEFS + "io.k8s.api.core.v1.Container"},
                        },
                        "model": {
                            "type": "object",
                            "required": ["modelFormat"],
                            "additionalProperties": False,
                            "properties": {
                                "modelFormat": {
                                    "type": "object",
                                    "required": ["name"],
                                    "additionalProperties": False,
                                    "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
                                },
                                "runtime": {"type": "string"},
                                "storageUri": {"type": "string"},
                                "protocolVersion": {"type": "string"},
                            },
                        },
                    },
                    # A predictor is either a model (served by a ServingRuntime) or custom containers.
                    "oneOf": [{"required": ["containers"]}, {"required": ["model"]}],
                },
            },
        },
    },
}


def inference_service(
    *,
    name: str,
    namespace: str,
    image: str,
    storage_uri: str,
    model_version: str,
    canary_percent: int | None,
    args: list[str],
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    min_replicas: int = 1,
    max_replicas: int = 4,
    port: int = 8080,
    resources: Mapping[str, Mapping[str, str]] | None = None,
    service_account: str | None = None,
) -> dict:
    """The InferenceService manifest (a plain dict, ready for ``yaml.safe_dump``).

    Args:
        storage_uri: the candidate model folder (``s3://``, ``gs://``, ``pvc://`` ...).
        canary_percent: integer share (0-100) of requests for a new revision; None: no
            canary (one InferenceService per A/B arm, each at 100%).
        args: the container command line; the model is at ``/mnt/models``.
    """
    if canary_percent is not None and (not isinstance(canary_percent, int) or not 0 <= canary_percent <= 100):
        raise ValueError(f"canaryTrafficPercent must be an integer in [0, 100], got {canary_percent!r}")
    container = {
        "name": "kserve-container",
        "image": image,
        "args": list(args),
        "env": [
            {"name": "STORAGE_URI", "value": storage_uri},
            {"name": "VSEARCH_MODEL_VERSION", "value": model_version},
        ],
        "ports": [{"containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": port}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 10},
        "resources": {k: dict(v) for k, v in (resources or {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}).items()},
    }
    predictor: dict[str, Any] = {
        **({"canaryTrafficPercent": canary_percent} if canary_percent is not None else {}),
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "containers": [container],
    }
    if service_account:
        predictor["serviceAccountName"] = service_account
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "vsearch", **dict(labels or {})},
            "annotations": dict(annotations or {}),
        },
        "spec": {"predictor": predictor},
    }


def validate_manifest(doc: Mapping, k8s_version: str = K8S_VERSION) -> None:
    """Validate an InferenceService structurally (see the module docstring).

    Raises:
        jsonschema.ValidationError: the first violation, with its path.
    """
    import jsonschema
    import kubernetes_validate.utils as kv
    from referencing import Registry, Resource

    versions = [v for v in kv.all_versions() if kv.major_minor(v) <= k8s_version]
    definitions = kv.schema_contents(f"kubernetes-json-schema/v{versions[-1]}-local-strict/_definitions.json", k8s_version)
    registry = Resource.from_contents(definitions) @ Registry()
    jsonschema.Draft202012Validator(ISVC_SCHEMA, registry=registry).validate(dict(doc))
    name = doc["metadata"]["name"]
    # DNS-1035 label: KServe turns the name into a Knative service and host names.
    import re

    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise jsonschema.ValidationError(f"metadata.name {name!r} must be a DNS-1035 label")
    namespace = doc["metadata"].get("namespace")
    if namespace is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", str(namespace)):
        raise jsonschema.ValidationError(f"metadata.namespace {str(namespace)[:80]!r} must be a DNS-1123 label")
