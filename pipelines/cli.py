"""``vsearch pipeline compile | run-local | submit | schedule``.

    vsearch pipeline compile [--out build/] [--config FILE] [--name NAME ...] [--set key=value ...]
    vsearch pipeline run-local NAME [--out runs/pipelines] [--tiny] [--param k=v ...] [--expect TASK ...]
    vsearch pipeline demo --out DIR [--preset default] [--seed 0] [--tiny] [--no-monitoring]
    vsearch pipeline submit NAME|--package FILE [--host URL] [--namespace NS] [--experiment E]
                            [--run-name R] [--param k=v ...]
    vsearch pipeline schedule NAME|--package FILE --cron "0 0 3 * * 1" [--name N] [...]
    vsearch pipeline schedule monitoring --champion-from s3://vsearch-models/registry --cron ... [...]

``--set key=value`` overrides and ``--config`` change the compile-time config (pipelines.config).
``--param`` values follow the pipeline's declared input types: submit and schedule check every
name against the compiled pipeline's inputs and convert each value to its type (a STRING stays
the text given, ``preset=on`` is "on"; ``seed=3`` must be an integer; ``train_overrides=[a, b]``
a list), refusing an unknown name or a bad value with one line, before any request. run-local
parses values as YAML.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from vsearch.config import ConfigError


def _params(items: list[str], parse: bool = True) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param '{item[:80]}' must look like name=value")
        params[key.strip()] = (yaml.safe_load(value) if value else "") if parse else value
    return params


CHAMPION_PARAMS = ("model_uri", "reference_uri")  # what --champion-from sets: the monitor's inputs


def champion_params(store: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` plus ``model_uri`` and ``reference_uri`` from the registry's champion entry, read now.

    The monitor then checks the model that serves, against that model's own drift reference:
    re-asserting the schedule (the daily CronJob) after a promote or rollback follows the champion.

    Raises:
        ConfigError: either parameter also given with ``--param``, a registry that cannot be read
            (unknown scheme, no credentials, ...), no champion yet, or a champion entry without a
            drift reference (promoted without ``--drift-reference``).
        DataError: an unreadable registry record.
    """
    from vsearch.registry import Registry
    from vsearch.schema import DataError

    given = [name for name in CHAMPION_PARAMS if name in params]
    if given:
        raise ConfigError(f"--param {given[0]}: --champion-from sets it from the registry's champion; give one or the other")
    try:
        champion = Registry(store).current()
    except (ConfigError, DataError):
        raise  # (already one line naming the record)
    except Exception as err:  # noqa: BLE001 - fsspec backends raise their own (botocore's NoCredentialsError, ...)
        raise ConfigError(f"--champion-from {store}: cannot read the registry: {type(err).__name__}: {err}") from err
    if champion is None:
        raise ConfigError(f"--champion-from {store}: the registry has no champion yet (vsearch release promote makes one)")
    if not champion.get("drift_reference"):
        raise ConfigError(f"--champion-from {store}: champion {champion['model_version']} (registry version "
                          f"{champion['registry_version']}) records no drift_reference; promote it with one")
    return {**params, "model_uri": champion["model_uri"], "reference_uri": champion["drift_reference"]}


def typed_params(spec, raw: dict[str, str]) -> dict[str, Any]:
    """``raw`` (name -> text) converted to the compiled pipeline's declared input types.

    Raises:
        ConfigError: an unknown parameter (with the known ones), a value that is not of its
            parameter's type, or a required parameter left out.
    """
    from kfp.pipeline_spec import pipeline_spec_pb2

    declared = spec.root.input_definitions.parameters
    kind = {name: pipeline_spec_pb2.ParameterType.ParameterTypeEnum.Name(p.parameter_type) for name, p in declared.items()}
    unknown = sorted(set(raw) - set(kind))
    if unknown:
        raise ConfigError(f"--param {unknown[0]!r}: the pipeline has no such input; it takes {sorted(kind)}")
    out: dict[str, Any] = {}
    for name, text in raw.items():
        t = kind[name]
        try:
            if t == "STRING":
                value: Any = text
            elif t == "NUMBER_INTEGER":
                value = int(text)
            elif t == "NUMBER_DOUBLE":
                value = float(text)
            elif t == "BOOLEAN":
                if text.lower() not in ("true", "false"):
                    raise ValueError("expected true or false")
                value = text.lower() == "true"
            else:  # LIST / STRUCT
                value = yaml.safe_load(text) if text else ([] if t == "LIST" else {})
                if not isinstance(value, list if t == "LIST" else dict):
                    raise ValueError(f"expected a {'list' if t == 'LIST' else 'mapping'}")
        except (ValueError, yaml.YAMLError) as err:
            raise ConfigError(f"--param {name}={text[:60]!r}: not a valid {t} ({str(err).splitlines()[0][:80]})") from err
        out[name] = value
    missing = sorted(n for n, p in declared.items() if n not in out and not p.is_optional and not p.HasField("default_value"))
    if missing:
        raise ConfigError(f"--param {missing[0]}=...: this pipeline input has no default and must be given")
    return out


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="pipeline config YAML (image, gpu, secrets, retry, caching); default: built-in")
    p.add_argument("--images", metavar="FILE",
                   help="the record of built images (dockerfiles/build.py: build/images.json): compile with their references")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted compile-time override, e.g. gpu.accelerator_limit=2 (repeatable)")


def image_overrides(record_path: str | None) -> list[str]:
    """``image=`` (and ``gpu_image=``) overrides from the record ``dockerfiles/build.py`` writes.

    A GPU record of the resolve stage only (``--gpu resolve``) names no runnable image: the GPU
    steps then keep the configured ``gpu_image``.
    """
    if not record_path:
        return []
    try:
        record = json.loads(Path(record_path).read_text())
        out = [f"image={record['cpu']['ref']}"]
        gpu = record.get("gpu") or {}
        if gpu.get("target") == "runtime":
            out.append(f"gpu_image={gpu['ref']}")
        return out
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{record_path}: not a record of built images (dockerfiles/build.py): {exc}") from exc


def run_summary(manifest: dict) -> str:
    """The lines that end a local run: its folder, the executor log, the HTML reports it wrote."""
    lines = [f"run folder: {manifest['run_dir']} ({len(manifest['tasks'])} tasks, {manifest['seconds']:.0f} s)",
             f"executor log: {manifest['log']}"]
    for task, record in sorted(manifest["tasks"].items()):
        for output, artifacts in sorted(record["outputs"].items()):
            if output == "report" or output.endswith("_report"):
                lines += [f"report: {a['uri']} ({task})" for a in artifacts]
    return "\n".join(lines)


def _add_connection_args(p: argparse.ArgumentParser) -> None:
    from pipelines.client import DEFAULT_TOKEN_ENV

    p.add_argument("name", nargs="?", help="pipeline to compile and upload (see `compile --help`)")
    p.add_argument("--package", help="an already compiled pipeline YAML instead of NAME")
    p.add_argument("--pipeline-name", help="pipeline name in KFP (default: the package's pipelineInfo.name)")
    p.add_argument("--version-name", help="pipeline version name (default: <pipeline>-<sha256 of the YAML>[:12])")
    p.add_argument("--host", help="KFP API endpoint (default: $KF_PIPELINES_ENDPOINT)")
    p.add_argument("--namespace", help="Kubeflow profile namespace (multi-user deployments)")
    p.add_argument("--token-env", default=DEFAULT_TOKEN_ENV,
                   help=f"environment variable holding the bearer token (default: {DEFAULT_TOKEN_ENV})")
    p.add_argument("--experiment", default="vsearch", help="experiment name (created if missing)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline parameter (repeatable)")
    p.add_argument("--champion-from", metavar="REGISTRY",
                   help="set model_uri and reference_uri from this registry's champion entry (its model_uri and "
                        "drift_reference), read now: for the monitoring pipeline")
    p.add_argument("--pipeline-root", help="artifact root for the run (default: the deployment's)")
    p.add_argument("--service-account", help="Kubernetes service account of the run")
    _add_config_args(p)


def _parser() -> argparse.ArgumentParser:
    from pipelines.compiler import PIPELINES

    names = ", ".join(sorted(PIPELINES))
    parser = argparse.ArgumentParser(prog="vsearch pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile pipelines to deterministic YAML")
    p.add_argument("--out", default="build", help="output folder (default: build/)")
    p.add_argument("--name", action="append", choices=sorted(PIPELINES), help=f"pipeline(s) to compile (default: all: {names})")
    _add_config_args(p)

    p = sub.add_parser("run-local", help="run a compiled pipeline here with kfp.local (this venv, or the built images)")
    p.add_argument("name", choices=sorted(PIPELINES))
    p.add_argument("--runner", choices=("subprocess", "container"), default="subprocess",
                   help="subprocess: each task in this venv; container: each task in its compiled image through "
                        "podman's Docker API (build the images first: make images; use with --images)")
    p.add_argument("--out", default="runs/pipelines", help="pipeline root; each run gets <pipeline>-<timestamp>/ in it")
    p.add_argument("--tiny", action="store_true", help="tiny data and configs, a few steps (smoke run, about a minute)")
    p.add_argument("--expect", action="append", default=[], metavar="TASK",
                   help="a task (name or display name) inside dsl.If/ParallelFor that this run must execute (repeatable)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline parameter (repeatable)")
    _add_config_args(p)

    sub.add_parser("demo", help="make demo through KFP: the training pipeline (+ monitoring) under kfp.local",
                   add_help=False)

    p = sub.add_parser("submit", help="upload the pipeline (or a new version) and start a run on Kubeflow")
    _add_connection_args(p)
    p.add_argument("--run-name", help="run name (default: <pipeline> <UTC time>)")
    p.add_argument("--wait", type=float, nargs="?", const=24 * 3600.0, default=None, metavar="SECONDS",
                   help="wait for the run to end (default limit 24 h); exit 0 only if it SUCCEEDED")
    p.add_argument("--poll-seconds", type=float, default=10.0, help="with --wait: seconds between state checks")

    p = sub.add_parser("schedule", help="create or replace a recurring run (cron with 6 fields: seconds first)")
    _add_connection_args(p)
    p.add_argument("--cron", required=True, help='6-field cron, seconds first: "0 0 3 * * 1" = Mondays 03:00')
    p.add_argument("--schedule-name", dest="schedule_name", help="recurring run name (default: <pipeline>-recurring)")
    p.add_argument("--max-concurrency", type=int, default=1)
    p.add_argument("--catchup", action="store_true", help="run missed intervals after a pause (default: no catch-up)")
    p.add_argument("--disabled", action="store_true", help="create the recurring run paused")
    p.add_argument("--start-time", help="RFC 3339 time before which no run starts")
    return parser


def _package(args, tmp: Path) -> tuple[Path, str, Any]:
    """(package path, pipeline name, its PipelineSpec) from NAME (compiled now) or --package."""
    from pipelines.compiler import check_package, compile_pipeline
    from pipelines.config import load_pipeline_config

    if bool(args.name) == bool(args.package):
        raise ConfigError("give either a pipeline NAME or --package FILE")
    if args.package:
        package = Path(args.package)
        if not package.is_file():
            raise ConfigError(f"{package}: pipeline package not found")
        try:
            spec, _ = check_package(package)
        except ValueError as err:
            raise ConfigError(str(err)) from err
    else:
        package = compile_pipeline(args.name, load_pipeline_config(args.config, [*image_overrides(args.images), *args.overrides]), tmp)
        spec, _ = check_package(package)
    return package, args.pipeline_name or spec.pipeline_info.name, spec


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        from pipelines.demo import main as demo_main

        return demo_main(argv[1:])
    args = _parser().parse_args(argv)
    from pipelines.config import load_pipeline_config

    if args.command == "compile":
        import time

        from pipelines.compiler import compile_all

        cfg = load_pipeline_config(args.config, [*image_overrides(args.images), *args.overrides])
        t0 = time.perf_counter()
        paths = compile_all(cfg, args.out, args.name)
        for path in paths:
            print(path)
        print(f"compiled {len(paths)} pipeline(s) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        return 0

    if args.command == "run-local":
        from pipelines.local import TINY_PARAMS, run_local

        # No retries locally: a local failure is a bug or bad input, not a lost node, and
        # kfp.local would replay it with the cluster's backoff (minutes). --set retry.num_retries=N
        # restores them.
        cfg = load_pipeline_config(args.config, ["retry.num_retries=0", *image_overrides(args.images), *args.overrides])
        params = {**(TINY_PARAMS.get(args.name, {}) if args.tiny else {}), **_params(args.param)}
        try:
            if args.runner == "container":
                from pipelines.local import podman_api

                with tempfile.TemporaryDirectory(prefix="vsearch-podman-") as api_dir, podman_api(api_dir) as host:
                    manifest = run_local(args.name, cfg, args.out, params, args.expect, runner="container", docker_host=host)
            else:
                manifest = run_local(args.name, cfg, args.out, params, args.expect)
        except RuntimeError as err:
            print(f"vsearch pipeline run-local: error: {err}", file=sys.stderr)
            return 1
        print(run_summary(manifest))
        return 0

    from pipelines import client as kfp_client

    params = _params(args.param, parse=False)  # typed by the pipeline's declared inputs in _remote
    if args.command == "schedule":
        kfp_client.validate_cron(args.cron)  # before any network call
    if args.champion_from:
        params = champion_params(args.champion_from, params)
    try:
        result, pipeline_name = _remote(args, params, kfp_client)
    except Exception as err:
        import kfp_server_api
        import urllib3

        if isinstance(err, kfp_server_api.ApiException):
            detail = (err.body or b"").decode() if isinstance(err.body, bytes) else (err.body or "")
            print(f"vsearch pipeline {args.command}: error: KFP API {err.status} {err.reason}: {detail.strip()}", file=sys.stderr)
            return 1
        if isinstance(err, urllib3.exceptions.HTTPError):
            print(f"vsearch pipeline {args.command}: error: cannot reach KFP: {err}", file=sys.stderr)
            return 1
        if isinstance(err, TimeoutError):  # --wait ran out; the run goes on
            print(f"vsearch pipeline {args.command}: error: {err}", file=sys.stderr)
            return 1
        raise
    print(json.dumps({"pipeline": pipeline_name, **result.to_dict()}, indent=2))
    return 0 if result.state in ("", "SUCCEEDED") else 1


def _remote(args, params: dict[str, Any], kfp_client):
    with tempfile.TemporaryDirectory(prefix="vsearch-pipeline-") as tmp:
        package, pipeline_name, spec = _package(args, Path(tmp))
        params = typed_params(spec, params)  # before any request
        # kfp.Client prints links on stdout: keep stdout for the JSON result.
        with contextlib.redirect_stdout(sys.stderr):
            client = kfp_client.connect(args.host, args.namespace, args.token_env)
            common = dict(
                pipeline_name=pipeline_name,
                experiment=args.experiment,
                params=params,
                version_name=args.version_name,
                namespace=args.namespace,
                pipeline_root=args.pipeline_root,
                service_account=args.service_account,
            )
            if args.command == "submit":
                import datetime

                run_name = args.run_name or f"{pipeline_name} {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S}"
                result = kfp_client.submit(client, package, run_name=run_name, **common)
                host = args.host or os.environ.get(kfp_client.HOST_ENV, "")
                print(f"run: {kfp_client.run_url(host, result.run_id)}", file=sys.stderr, flush=True)
                if args.wait is not None:
                    state = kfp_client.wait_for_run(client, result.run_id, args.wait, args.poll_seconds)
                    result = dataclasses.replace(result, state=state, run_url=kfp_client.run_url(host, result.run_id))
                else:
                    result = dataclasses.replace(result, run_url=kfp_client.run_url(host, result.run_id))
            else:
                result = kfp_client.schedule(
                    client,
                    package,
                    cron=args.cron,
                    name=args.schedule_name or f"{pipeline_name}-recurring",
                    max_concurrency=args.max_concurrency,
                    catchup=args.catchup,
                    enabled=not args.disabled,
                    start_time=args.start_time,
                    **common,
                )
    return result, pipeline_name


if __name__ == "__main__":
    sys.exit(main())
