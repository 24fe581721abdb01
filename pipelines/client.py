"""Submitting and scheduling compiled pipelines on Kubeflow Pipelines through ``kfp.Client``.

- experiments are get-or-create by name;
- a pipeline is uploaded once by name; later uploads add a *version* named after the
  content of the YAML (``<pipeline>-<sha256[:12]>``), so resubmitting the same YAML reuses
  the version and a changed YAML adds one;
- runs and recurring runs reference the pipeline version (pipeline_id AND version_id), so
  the KFP UI shows exactly which compiled YAML ran;
- ``schedule`` is idempotent: a recurring run of that name in the experiment that already has
  the pipeline version, cron, parameters and settings asked for is kept as it is (nothing is
  deleted or created), so the daily scheduler CronJob re-asserts the schedule for free. A
  recurring run cannot be updated in KFP: on a change ``schedule`` creates the new one first,
  then deletes the older ones with the same name, so there is never a moment without a
  schedule.

The connection comes from flags or the environment, never from files in the repository:
host ``--host`` or ``KF_PIPELINES_ENDPOINT``; credentials, first found wins:

1. a bearer token in the environment variable named by ``--token-env`` (default
   ``VSEARCH_KFP_TOKEN``);
2. inside the cluster, the projected ServiceAccount token (``KF_PIPELINES_SA_TOKEN_PATH``,
   default ``/var/run/secrets/kubeflow/pipelines/token``, as ``k8s/base/recurring-run.yaml``
   mounts it), re-read on every request so the kubelet's rotation is followed;
3. outside it, behind Dex / oauth2-proxy, a session cookie from ``VSEARCH_KFP_COOKIE``
   (``authservice_session=...`` or ``oauth2_proxy_kubeflow=...``, copied from the browser).

None of them: anonymous, which a multi-user KFP refuses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vsearch.config import ConfigError

DEFAULT_TOKEN_ENV = "VSEARCH_KFP_TOKEN"
COOKIE_ENV = "VSEARCH_KFP_COOKIE"
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"  # kfp.client's own variable
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
HOST_ENV = "KF_PIPELINES_ENDPOINT"  # the variable kfp.Client itself reads
DEFAULT_NAMESPACE = "kubeflow"  # kfp.Client's default; any other value skips the /healthz probe

# One field of a robfig/cron expression (KFP's scheduler): digits, names, * ? , - / L W #.
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?,/#\-]+$")


@dataclass(frozen=True)
class Submitted:
    """What a submission created or reused (ids as the KFP API returned them)."""

    experiment_id: str
    pipeline_id: str
    version_id: str
    run_id: str = ""
    recurring_run_id: str = ""
    deleted_recurring_run_ids: tuple[str, ...] = ()
    run_url: str = ""
    state: str = ""  # the run's final state, with --wait
    unchanged: bool = False  # schedule: the recurring run already was as asked; nothing was recreated

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def validate_cron(cron: str) -> str:
    """Check a 6-field cron expression (seconds first, as KFP's scheduler expects).

    Raises:
        ConfigError: not 6 fields, or a field with characters cron does not know. A 5-field
            (crontab) expression gets a hint to prepend the seconds field.
    """
    fields = cron.split()
    if len(fields) == 5:
        raise ConfigError(f"--cron '{cron}': KFP needs 6 fields (seconds first); did you mean '0 {cron}'?")
    if len(fields) != 6:
        raise ConfigError(f"--cron '{cron}': KFP needs 6 fields 'sec min hour day-of-month month day-of-week'")
    for f in fields:
        if not _CRON_FIELD.match(f):
            raise ConfigError(f"--cron '{cron}': field '{f}' is not a cron field")
    return " ".join(fields)


def connect(host: str | None = None, namespace: str | None = None, token_env: str = DEFAULT_TOKEN_ENV):
    """A ``kfp.Client`` for ``host`` (or ``$KF_PIPELINES_ENDPOINT``).

    The bearer token, if any, is read from the environment variable ``token_env``. With the
    default namespace, ``kfp.Client`` probes ``/apis/v2beta1/healthz`` at construction (to
    detect multi-user mode); a namespace of its own skips that probe.

    Raises:
        ConfigError: no host given.
    """
    import warnings

    import kfp

    host = host or os.environ.get(HOST_ENV)
    if not host:
        raise ConfigError(f"no Kubeflow Pipelines host: pass --host URL or set {HOST_ENV}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
        return kfp.Client(host=host, namespace=namespace or DEFAULT_NAMESPACE, **credentials(token_env))


def credentials(token_env: str = DEFAULT_TOKEN_ENV) -> dict:
    """kfp.Client keyword arguments for the first credential found (see the module docstring)."""
    token = os.environ.get(token_env)
    if token:
        return {"existing_token": token}
    sa_path = os.environ.get(SA_TOKEN_ENV) or SA_TOKEN_PATH
    if os.path.isfile(sa_path):
        from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

        return {"credentials": ServiceAccountTokenVolumeCredentials(sa_path)}
    cookie = os.environ.get(COOKIE_ENV)
    if cookie:
        return {"cookies": cookie}
    return {}


def package_version_name(package: str | os.PathLike, pipeline_name: str) -> str:
    """``<pipeline>-<sha256(yaml)[:12]>``: same YAML -> same version name."""
    digest = hashlib.sha256(Path(package).read_bytes()).hexdigest()[:12]
    return f"{pipeline_name}-{digest}"


def _namespace(client, namespace: str | None) -> str | None:
    return namespace or client.get_user_namespace() or None


def _equals(key: str, value: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": key, "stringValue": value}]})


def ensure_experiment(client, name: str, namespace: str | None = None, description: str | None = None) -> str:
    """The id of experiment ``name``, created if missing."""
    experiment = client.create_experiment(name=name, description=description, namespace=_namespace(client, namespace))
    return experiment.experiment_id


def ensure_pipeline_version(
    client,
    package: str | os.PathLike,
    pipeline_name: str,
    version_name: str | None = None,
    description: str | None = None,
    namespace: str | None = None,
) -> tuple[str, str]:
    """Upload ``package`` as pipeline ``pipeline_name`` (or as a new version of it).

    Returns:
        (pipeline_id, version_id). A version of that name already there is reused, not
        uploaded twice.
    """
    package = str(package)
    version_name = version_name or package_version_name(package, pipeline_name)
    ns = _namespace(client, namespace)
    # Looked up in the namespace (kfp.Client.get_pipeline_id only sees shared pipelines).
    found = client.list_pipelines(filter=_equals("display_name", pipeline_name), namespace=ns, page_size=10)
    matches = [p.pipeline_id for p in found.pipelines or [] if p.display_name == pipeline_name]
    if len(matches) > 1:
        raise ConfigError(f"{len(matches)} pipelines are named '{pipeline_name}' in KFP; pass --pipeline-name")
    pipeline_id = matches[0] if matches else None
    if pipeline_id is None:
        pipeline = client.upload_pipeline(package, pipeline_name=pipeline_name, description=description, namespace=ns)
        pipeline_id = pipeline.pipeline_id
        # The upload also created the first version (named after the pipeline): add ours by
        # content so that later runs can tell which YAML ran.
    existing = client.list_pipeline_versions(pipeline_id, filter=_equals("display_name", version_name), page_size=10)
    for version in existing.pipeline_versions or []:
        if version.display_name == version_name:
            return pipeline_id, version.pipeline_version_id
    version = client.upload_pipeline_version(
        package, pipeline_version_name=version_name, pipeline_id=pipeline_id, description=description
    )
    return pipeline_id, version.pipeline_version_id


def submit(
    client,
    package: str | os.PathLike,
    *,
    pipeline_name: str,
    experiment: str,
    run_name: str,
    params: dict[str, Any] | None = None,
    version_name: str | None = None,
    namespace: str | None = None,
    pipeline_root: str | None = None,
    service_account: str | None = None,
) -> Submitted:
    """Upload (or reuse) the pipeline version of ``package`` and start one run of it.

    Caching is decided at compile time (``caching``/``no_cache_steps``): kfp.Client's
    ``enable_caching`` has no effect on a run that references a pipeline version.
    """
    experiment_id = ensure_experiment(client, experiment, namespace)
    pipeline_id, version_id = ensure_pipeline_version(client, package, pipeline_name, version_name, namespace=namespace)
    run = client.run_pipeline(
        experiment_id=experiment_id,
        job_name=run_name,
        params=params or {},
        pipeline_id=pipeline_id,
        version_id=version_id,
        pipeline_root=pipeline_root,
        service_account=service_account,
    )
    return Submitted(experiment_id, pipeline_id, version_id, run_id=run.run_id)


TERMINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")


def run_url(host: str, run_id: str) -> str:
    """The KFP UI page of a run."""
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def wait_for_run(client, run_id: str, timeout_s: float, poll_s: float = 10.0) -> str:
    """Poll the run until it ends; returns its final state (``SUCCEEDED`` ...).

    Raises:
        TimeoutError: still running after ``timeout_s`` seconds (the run keeps running).
    """
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        state = str(client.get_run(run_id).state or "")
        if state in TERMINAL_STATES:
            return state
        if time.monotonic() >= deadline:
            raise TimeoutError(f"run {run_id} is still {state or 'pending'} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def recurring_runs_named(client, experiment_id: str, name: str) -> list:
    """The recurring runs called ``name`` in the experiment (all pages), as the API returned them."""
    runs, token = [], ""
    while True:
        page = client.list_recurring_runs(
            experiment_id=experiment_id, filter=_equals("display_name", name), page_size=100, page_token=token
        )
        runs += [r for r in page.recurring_runs or [] if r.display_name == name]
        token = page.next_page_token or ""
        if not token:
            return runs


def _timestamp(value) -> str:
    """A start time (RFC 3339 text or datetime) in one comparable form; "" for none."""
    import datetime

    if not value:
        return ""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc).isoformat()


def recurring_run_settings(run) -> dict[str, Any]:
    """What ``schedule`` sets on a recurring run, read back from the API's object (for comparison)."""
    ref = run.pipeline_version_reference
    cron = run.trigger.cron_schedule if run.trigger and run.trigger.cron_schedule else None
    config = run.runtime_config
    status = str(run.status or "")
    return {
        "pipeline_id": ref.pipeline_id if ref else None,
        "version_id": ref.pipeline_version_id if ref else None,
        "cron": cron.cron if cron else None,
        "start_time": _timestamp(cron.start_time if cron else None),
        "max_concurrency": int(run.max_concurrency or 0),
        "no_catchup": bool(run.no_catchup),
        "enabled": status == "ENABLED" if status else str(run.mode or "") == "ENABLE",
        "params": dict(config.parameters or {}) if config else {},
        "pipeline_root": (config.pipeline_root or "") if config else "",
        "service_account": run.service_account or "",
    }


def schedule(
    client,
    package: str | os.PathLike,
    *,
    cron: str,
    name: str,
    pipeline_name: str,
    experiment: str,
    params: dict[str, Any] | None = None,
    version_name: str | None = None,
    namespace: str | None = None,
    max_concurrency: int = 1,
    catchup: bool = False,
    enabled: bool = True,
    pipeline_root: str | None = None,
    service_account: str | None = None,
    start_time: str | None = None,
) -> Submitted:
    """Make the recurring run ``name`` run the pipeline version of ``package`` as asked.

    One recurring run of that name already as asked (version, cron, parameters, concurrency,
    catch-up, enabled, root, service account, start time): kept, and any other of the same
    name deleted. Otherwise (KFP cannot update a recurring run) the new one is created first,
    then every older recurring run of the same name in the experiment is deleted.
    """
    cron = validate_cron(cron)
    if max_concurrency < 1:
        raise ConfigError("--max-concurrency must be >= 1")
    experiment_id = ensure_experiment(client, experiment, namespace)
    pipeline_id, version_id = ensure_pipeline_version(client, package, pipeline_name, version_name, namespace=namespace)
    wanted = {
        "pipeline_id": pipeline_id,
        "version_id": version_id,
        "cron": cron,
        "start_time": _timestamp(start_time),
        "max_concurrency": max_concurrency,
        "no_catchup": not catchup,
        "enabled": enabled,
        "params": dict(params or {}),
        "pipeline_root": pipeline_root or "",
        "service_account": service_account or "",
    }
    old = recurring_runs_named(client, experiment_id, name)
    same = [r.recurring_run_id for r in old if recurring_run_settings(r) == wanted]
    if same:
        kept = same[0]
    else:
        kept = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=name,
            cron_expression=cron,
            start_time=start_time,
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            params=params or {},
            pipeline_id=pipeline_id,
            version_id=version_id,
            enabled=enabled,
            pipeline_root=pipeline_root,
            service_account=service_account,
        ).recurring_run_id
    deleted = []
    for run in old:
        if run.recurring_run_id != kept:
            client.delete_recurring_run(run.recurring_run_id)
            deleted.append(run.recurring_run_id)
    return Submitted(
        experiment_id, pipeline_id, version_id, recurring_run_id=kept, deleted_recurring_run_ids=tuple(deleted),
        unchanged=bool(same),
    )


def run_recurring_now(client, schedule_name: str, *, experiment: str, run_name: str,
                      namespace: str | None = None) -> Submitted:
    """Start one run now exactly as the recurring run ``schedule_name`` would start it.

    Same pipeline version, parameters, pipeline root and service account as the schedule, so
    a drift-triggered retraining is the weekly retraining, early (no second copy of its
    parameters to drift apart).

    Raises:
        ConfigError: no recurring run of that name in the experiment.
    """
    experiment_id = ensure_experiment(client, experiment, namespace)
    found = recurring_runs_named(client, experiment_id, schedule_name)
    if not found:
        raise ConfigError(f"no recurring run named '{schedule_name}' in experiment '{experiment}': nothing to start")
    settings = recurring_run_settings(found[0])
    run = client.run_pipeline(
        experiment_id=experiment_id,
        job_name=run_name,
        params=settings["params"],
        pipeline_id=settings["pipeline_id"],
        version_id=settings["version_id"],
        pipeline_root=settings["pipeline_root"] or None,
        service_account=settings["service_account"] or None,
    )
    return Submitted(experiment_id, settings["pipeline_id"], settings["version_id"], run_id=run.run_id)
