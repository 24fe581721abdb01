"""Pod Security Standard "restricted" (Kubernetes v1.30), checked field by field on a Pod.

One checker for the k8s/ workloads (tests/k8s/test_manifests.py) and the TrainJob pods
(tests/unit/test_trainjob.py). It follows the policy's published rules
(kubernetes.io/docs/concepts/security/pod-security-standards): volume types, host namespaces,
privileged, allowPrivilegeEscalation, capabilities, runAsNonRoot, runAsUser, seccomp, hostPort.
"""

from __future__ import annotations


def restricted_violations(pod: dict) -> list[str]:
    """What Pod Security "restricted" (v1.30) would refuse in ``pod``, checked field by field."""
    spec, out = pod["spec"], []
    pod_sc = spec.get("securityContext", {})
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
    for v in spec.get("volumes", []):
        if not set(v) - {"name"} <= allowed_volumes:
            out.append(f"volume {v['name']}: type {sorted(set(v) - {'name'})}")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(key)
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc, name = c.get("securityContext", {}), c["name"]
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            out.append(f"{name}: capabilities must drop ALL")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities.add")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            out.append(f"{name}: runAsNonRoot")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser 0")
        if sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type") not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile")
        for p in c.get("ports", []):
            if p.get("hostPort"):
                out.append(f"{name}: hostPort")
    return out
