"""``vsearch rollout``: from a blessing, write ``rollout.yaml`` and the KServe canary manifest.

The control is the champion the blessing judged the candidate against (the model serving
now, through the serving alias); the treatment is the blessed candidate, searched through
its own alias (``<alias>_candidate`` by default) on its own versioned collection
(``vsearch_<model version>``). The ramp, guardrails and KServe settings come from
``configs/rollout.yaml``. An unblessed blessing is refused (DataError: exit 2), and so is a
blessing judged against another champion than the registry's (when ``--registry`` is given).
Both files are validated (pydantic schema; KServe fields) and published together atomically.
"""

from __future__ import annotations

import argparse
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from vsearch import artifacts
from vsearch.config import ConfigError
from vsearch.schema import DataError

ROLLOUT_FILE = "rollout.yaml"
KSERVE_FILE = "inferenceservice.yaml"


def collection_name(version: str) -> str:
    """The Milvus collection a backfill writes for a model version: ``vsearch_<version, - -> _>``."""
    return "vsearch_" + version.replace("-", "_")


def load_rollout_defaults(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """``configs/rollout.yaml`` (or ``path``) with dotted overrides (YAML values)."""
    import yaml
    from importlib import resources

    text = Path(path).read_text() if path else (resources.files("vsearch.configs") / "rollout.yaml").read_text()
    try:
        cfg = yaml.safe_load(text) or {}
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"override {item!r}: expected key=value")
            node = cfg
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path or 'configs/rollout.yaml'}: not valid YAML: {err}") from err
    known = {"experiment_prefix", "alias", "treatment_alias_suffix", "ramp", "guardrails", "kserve"}
    unknown = set(cfg) - known
    if unknown:
        raise ConfigError(f"rollout config: unknown key(s) {sorted(unknown)}")
    return cfg


def _model_ref(entry: dict, what: str, where: str):
    from vsearch.rollout.schema import ModelRef

    uri, version = entry.get("model_dir") or entry.get("model_uri"), entry.get("version") or entry.get("model_version")
    if not uri or not version:
        raise DataError(where, f"the blessing's {what} has no model folder or version")
    return ModelRef(uri=str(uri), version=str(version))


def build_rollout(blessing: dict, blessing_uri: str, cfg: dict, *, experiment_id: str | None = None,
                  control: dict | None = None, created_at: datetime | None = None):
    """The `RolloutConfig` for a blessed candidate (pure: no I/O).

    Args:
        blessing: a blessing.json dict; must be blessed.
        control: the control model entry (``model_dir``/``version``); default the blessing's champion.
    """
    from pydantic import ValidationError

    from vsearch.rollout.schema import Assignment, Guardrail, RampStep, Rollback, RolloutConfig, Traffic, Variant

    if not blessing.get("blessed"):
        raise DataError(blessing_uri, "rollout refused: the candidate is not blessed", detail=str(blessing.get("reason", "")))
    control = control or blessing.get("champion")
    if not control:
        raise ConfigError(f"{blessing_uri}: the blessing has no champion, so there is no control to A/B against "
                          "(first deployment: promote it with `vsearch registry promote`, or pass --control-model)")
    treatment_ref = _model_ref(blessing["candidate"], "candidate", blessing_uri)
    control_ref = _model_ref(control, "champion", blessing_uri)
    if treatment_ref.version == control_ref.version:
        raise DataError(blessing_uri, "rollout refused: candidate and control are the same model", detail=treatment_ref.version)
    alias = str(cfg.get("alias", "vsearch_serving"))
    treatment_alias = alias + str(cfg.get("treatment_alias_suffix", "_candidate"))
    experiment_id = experiment_id or f"{cfg.get('experiment_prefix', 'vsearch')}-{treatment_ref.version}-vs-{control_ref.version}"
    try:
        ramp = [RampStep(**step) for step in cfg["ramp"]]
        rollout = RolloutConfig(
            experiment_id=experiment_id,
            created_at=created_at or datetime.now(timezone.utc).replace(microsecond=0),
            blessing=blessing_uri,
            control=Variant(name="control", model=control_ref, milvus_alias=alias,
                            milvus_collection=collection_name(control_ref.version)),
            treatment=Variant(name="treatment", model=treatment_ref, milvus_alias=treatment_alias,
                              milvus_collection=collection_name(treatment_ref.version)),
            traffic=Traffic(treatment_percent=ramp[0].treatment_percent, ramp=ramp),
            assignment=Assignment(salt=experiment_id),
            guardrails=[Guardrail(**g) for g in cfg["guardrails"]],
            rollback=Rollback(
                alias=alias,
                restore_collection=collection_name(control_ref.version),
                instruction=(
                    f"On any guardrail breach: set traffic.treatment_percent to 0 in this file (the search service "
                    f"then routes every user to control), re-apply {KSERVE_FILE} with canaryTrafficPercent: 0, and keep "
                    f"alias {alias} on collection {collection_name(control_ref.version)}. If the candidate was already "
                    f"promoted: `vsearch registry rollback` and point alias {alias} back to "
                    f"{collection_name(control_ref.version)} (`vsearch index rollback`)."
                ),
            ),
        )
    except (KeyError, TypeError, ValidationError) as err:
        raise ConfigError(f"rollout config does not fit the rollout schema: {err}") from err
    return rollout


def _project_image() -> str:
    """The one project image tag (components/image.py), used unless the config names another."""
    from components.image import IMAGE

    return IMAGE


def build_manifest(rollout, cfg: dict) -> dict:
    """The KServe InferenceService for the treatment's query encoder at the first ramp step."""
    from vsearch.rollout.kserve import inference_service

    first = rollout.traffic.ramp[0].treatment_percent
    if float(first) != int(first):
        raise ConfigError(f"KServe canaryTrafficPercent is an integer: the first ramp step {first}% cannot be expressed")
    k = dict(cfg.get("kserve") or {})
    try:
        return inference_service(
            name=str(k.get("name", "vsearch-query-encoder")),
            namespace=str(k.get("namespace", "default")),
            image=str(k.get("image") or _project_image()),
            # "{alias}" / "{model_version}" in the args are filled with the treatment's.
            args=[str(a).format(alias=rollout.treatment.milvus_alias, model_version=rollout.treatment.model.version)
                  for a in k.get("args", [])],
            storage_uri=rollout.treatment.model.uri,
            model_version=rollout.treatment.model.version,
            canary_percent=int(first),
            min_replicas=int(k.get("min_replicas", 1)),
            max_replicas=int(k.get("max_replicas", 4)),
            service_account=k.get("service_account"),
            labels={"vsearch.io/experiment": rollout.experiment_id[:63]},
            annotations={
                "vsearch.io/experiment-id": rollout.experiment_id,
                "vsearch.io/treatment-model-version": rollout.treatment.model.version,
                "vsearch.io/control-model-version": rollout.control.model.version,
                "vsearch.io/blessing": rollout.blessing,
            },
        )
    except (KeyError, ValueError) as err:
        raise ConfigError(f"rollout config 'kserve' section: {err}") from err


def _check_registry(blessing: dict, where: str, store: str) -> None:
    from vsearch.registry import Registry

    current = Registry(store).current()
    champion = (blessing.get("champion") or {}).get("version")
    candidate = blessing["candidate"].get("version")
    if current is None:
        if champion is not None:
            raise DataError(where, "rollout refused: the registry has no champion but the blessing names one", detail=champion)
        return
    if current["model_version"] not in (champion, candidate):
        raise DataError(where, "rollout refused: stale blessing, the registry's champion is another model",
                        detail=f"registry {current['model_version']}, blessing champion {champion}")


def write_rollout(blessing_path: str | os.PathLike, out_dir: str | os.PathLike, cfg: dict | None = None, *,
                  registry: str | None = None, experiment_id: str | None = None, control_model: str | None = None) -> dict[str, Path]:
    """Write ``rollout.yaml`` + ``inferenceservice.yaml`` into ``out_dir`` (published atomically)."""
    import yaml

    from vsearch.evaluation.gate import BLESSING_FILE, load_blessing
    from vsearch.rollout.schema import dump_rollout, load_rollout

    cfg = cfg if cfg is not None else load_rollout_defaults()
    blessing = load_blessing(blessing_path)
    path = Path(blessing_path)
    uri = str((path / BLESSING_FILE if path.is_dir() else path).resolve())
    if not blessing.get("blessed"):
        raise DataError(uri, "rollout refused: the candidate is not blessed", detail=str(blessing.get("reason", "")))
    if registry:
        _check_registry(blessing, uri, registry)
    control = None
    if control_model:
        control = {"model_dir": str(Path(control_model).resolve()), "version": artifacts.model_version(control_model)}
    rollout = build_rollout(blessing, uri, cfg, experiment_id=experiment_id, control=control)
    manifest = build_manifest(rollout, cfg)
    out = Path(out_dir)
    staging = artifacts.fresh_staging(out)
    try:
        dump_rollout(rollout, staging / ROLLOUT_FILE)
        if load_rollout(staging / ROLLOUT_FILE) != rollout:  # the file must round-trip through the schema
            raise RuntimeError(f"{staging / ROLLOUT_FILE}: does not read back as written")
        (staging / KSERVE_FILE).write_text(yaml.safe_dump(manifest, sort_keys=False))
        artifacts.publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"rollout": out / ROLLOUT_FILE, "kserve": out / KSERVE_FILE}


def main(argv: list[str] | None = None) -> int:
    """``vsearch rollout --blessing PATH --out DIR [--registry URI] [--config YAML] [key=value ...]``."""
    parser = argparse.ArgumentParser(prog="vsearch rollout", description="Write rollout.yaml + KServe canary manifest from a blessing.")
    parser.add_argument("--blessing", required=True, help="blessing.json (or its folder) from vsearch gate")
    parser.add_argument("--out", required=True, help="folder for rollout.yaml and inferenceservice.yaml (replaced atomically)")
    parser.add_argument("--registry", help="champion registry: refuse a blessing judged against another champion")
    parser.add_argument("--config", help="rollout defaults YAML (default: configs/rollout.yaml)")
    parser.add_argument("--experiment-id", help="default: <prefix>-<candidate version>-vs-<champion version>")
    parser.add_argument("--control-model", help="control model folder when the blessing has no champion")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. alias=search_v1 kserve.namespace=search")
    args = parser.parse_args(argv)
    cfg = load_rollout_defaults(args.config, args.overrides)
    paths = write_rollout(args.blessing, args.out, cfg, registry=args.registry, experiment_id=args.experiment_id,
                          control_model=args.control_model)
    print(f"rollout: {paths['rollout']}\nkserve:  {paths['kserve']}")
    return 0
