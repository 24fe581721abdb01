"""Submit a rendered job to the Kubernetes API and wait for its terminal condition."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable

from vsearch.config import ConfigError
from vsearch.training.trainjob.spec import PYTORCHJOB_PLURAL, TRAINJOB_PLURAL

# What `submit_and_wait` does to the API per flavour (create, poll, delete on timeout / retry):
# the pipeline-runner Role in k8s/base/rbac.yaml grants exactly this (tests/k8s checks it).
RBAC_RULES = {
    "trainjob": {"apiGroup": "trainer.kubeflow.org", "resource": "trainjobs", "verbs": ("create", "get", "delete")},
    "pytorchjob": {"apiGroup": "kubeflow.org", "resource": "pytorchjobs", "verbs": ("create", "get", "delete")},
}
# Terminal conditions (status "True"): Trainer v2 TrainJob / training-operator PyTorchJob.
SUCCESS_CONDITIONS = {"TrainJob": "Complete", "PyTorchJob": "Succeeded"}
FAILURE_CONDITION = "Failed"


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
        return _read_status(api, (group, version, ns, plural, name), where, max_poll_errors, poll_s, log, sleep)

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


def _read_status(api, coords: tuple[str, str, str, str, str], where: str, max_poll_errors: int, poll_s: float,
                 log: Callable[[str], None], sleep: Callable[[float], None]) -> dict:
    """The job object; a few consecutive 5xx are retried, a 404 means someone deleted it."""
    from kubernetes.client.rest import ApiException

    errors = 0
    while True:
        try:
            return api.get_namespaced_custom_object(*coords)
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
