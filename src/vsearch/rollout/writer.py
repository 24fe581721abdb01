"""``vsearch rollout``: from a blessing, write ``rollout.yaml`` and the per-arm KServe manifests.

The plan of one release (`vsearch.release` drives it): the treatment is the blessed candidate,
searched through the candidate alias (``<live alias>_candidate``) on its own versioned
collection; the control is the champion the blessing judged it against, searched through the
live alias, or, on a first deployment (no champion yet), the baseline (``--control-model``)
through ``<live alias>_baseline`` on its own collection. Each arm queries only a collection its
own model built: given ``--milvus-uri`` the writer checks every alias before it writes.
Collection names come from the one rule, `vsearch.indexing.store.collection_name`.

Assignment is sticky per user (sha256 of salt + user id, `vsearch.rollout.schema`). KServe's
canary splits *requests*, not users, so instead of ``canaryTrafficPercent`` the manifests hold
one InferenceService per arm, each serving its own model and alias at 100%, and the search
front (``vsearch serve --rollout``) assigns users with the same hash (docs/gate-and-rollout.md).
An unblessed or stale blessing is refused (DataError: exit 2). Both files are validated and
published together atomically.
"""

from __future__ import annotations

import argparse
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from vsearch import artifacts
from vsearch.config import ConfigError, load_typed
from vsearch.schema import DataError

ROLLOUT_FILE = "rollout.yaml"
KSERVE_FILE = "inferenceservice.yaml"
BLESSING_COPY = "blessing.json"  # beside rollout.yaml; the plan's `blessing` names it relative to the plan


@dataclass
class KServeDefaults:
    """One InferenceService per arm (``<name>-control``, ``<name>-treatment``)."""

    name: str = "vsearch-query-encoder"
    namespace: str = "vsearch"
    image: str | None = None  # None: the project image, vsearch.images.IMAGE (one place)
    # "{alias}" / "{model_version}" are filled with the arm's.
    args: list[str] = field(default_factory=lambda: ["vsearch", "serve", "--model", "/mnt/models", "--alias", "{alias}", "--data",
                                                     "/mnt/catalog", "--host", "0.0.0.0", "--port", "8080"])
    min_replicas: int = 1
    max_replicas: int = 4
    service_account: str | None = "vsearch-models"


@dataclass
class RolloutDefaults:
    """``configs/rollout.yaml``: the same keys and defaults. ``ramp`` and ``guardrails`` are
    validated as `vsearch.rollout.schema` RampStep / Guardrail when a plan is built."""

    experiment_prefix: str = "vsearch"
    alias: str = "vsearch_serving"
    collection_prefix: str = "vsearch"
    ramp: list[dict] = field(default_factory=lambda: [
        {"treatment_percent": 10, "min_duration_hours": 24},
        {"treatment_percent": 25, "min_duration_hours": 48},
        {"treatment_percent": 50, "min_duration_hours": 72},
    ])
    guardrails: list[dict] = field(default_factory=lambda: [
        {"metric": "ctr", "direction": "higher_is_better", "max_relative_regression": 0.02, "min_samples": 10000},
        {"metric": "add_to_cart_rate", "direction": "higher_is_better", "max_relative_regression": 0.03, "min_samples": 10000},
        {"metric": "p99_latency_ms", "direction": "lower_is_better", "max_relative_regression": 0.10, "max_absolute": 250,
         "min_samples": 1000},
        {"metric": "error_rate", "direction": "lower_is_better", "max_absolute": 0.01, "min_samples": 1000},
    ])
    kserve: KServeDefaults = field(default_factory=KServeDefaults)


def load_rollout_defaults(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RolloutDefaults:
    """``configs/rollout.yaml`` (or ``path``) with dotted overrides (YAML values); ConfigError on any problem."""
    return load_typed(RolloutDefaults, path if path is not None else "rollout", overrides)


def _ref(model, what: str, where: str, drift_reference: str | None = None):
    from vsearch.rollout.schema import ModelRef

    if model is None or not model.model_uri or not model.version:
        raise DataError(where, f"the blessing's {what} has no model URI or version")
    return ModelRef(uri=str(model.model_uri), version=str(model.version),
                    drift_reference=artifacts.durable_uri(drift_reference) if drift_reference else None)


def build_rollout(blessing, blessing_uri: str, cfg: RolloutDefaults, *, experiment_id: str | None = None, control=None,
                  created_at: datetime | None = None, milvus_uri: str | None = None, registry: str | None = None,
                  lineage: dict | None = None, references: dict[str, str | None] | None = None):
    """The `RolloutConfig` for a blessed candidate (pure: no I/O).

    Args:
        blessing: a `vsearch.blessing.Blessing`; must be blessed.
        control: the control arm's `vsearch.blessing.ModelRef` when the blessing has no champion
            (first deployment: the baseline); with a champion, the champion is the control.
        lineage: ``{code_version, run_id}`` of the writer (`vsearch.lineage.lineage`).
        references: ``{"treatment" | "control": URI}`` of the arms' drift references, where known.
    """
    from pydantic import ValidationError

    from vsearch.indexing.store import baseline_alias, candidate_alias, collection_name
    from vsearch.rollout.schema import Assignment, Guardrail, Lineage, RampStep, Rollback, RolloutConfig, Traffic, Variant

    if not blessing.blessed:
        raise DataError(blessing_uri, "rollout refused: the candidate is not blessed", detail=blessing.reason)
    if blessing.champion is None and control is None:
        raise ConfigError(f"{blessing_uri}: the blessing has no champion, so there is no control to A/B against "
                          "(first deployment: name the baseline with --control-model)")
    first_deployment = blessing.champion is None
    references = references or {}
    treatment_ref = _ref(blessing.candidate, "candidate", blessing_uri, references.get("treatment"))
    control_ref = _ref(blessing.champion or control, "champion" if blessing.champion else "control model", blessing_uri,
                       references.get("control"))
    if treatment_ref.version == control_ref.version:
        raise DataError(blessing_uri, "rollout refused: candidate and control are the same model", detail=treatment_ref.version)
    live = str(cfg.alias)
    prefix = str(cfg.collection_prefix)
    control_alias = baseline_alias(live) if first_deployment else live
    control_collection = collection_name(prefix, control_ref.version)
    treatment_collection = collection_name(prefix, treatment_ref.version)
    created_at = created_at or datetime.now(timezone.utc).replace(microsecond=0)
    # One id per plan (the release log is keyed by it): the same pair reviewed again is a new release.
    experiment_id = experiment_id or (f"{cfg.experiment_prefix}-{treatment_ref.version}-vs-{control_ref.version}"
                                      f"-{created_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:4]}")
    restore = (f"nothing is live yet: promotion would create alias {live}; a rollback after it drops {live} again"
               if first_deployment else f"alias {live} back on {control_collection} and the registry's champion back to {control_ref.version}")
    try:
        ramp = [RampStep(**step) for step in cfg.ramp]
        if not ramp:
            raise ConfigError("rollout config: 'ramp' needs at least one step")
        return RolloutConfig(
            experiment_id=experiment_id,
            created_at=created_at,
            blessing=blessing_uri,
            control=Variant(name="control", model=control_ref, milvus_alias=control_alias, milvus_collection=control_collection),
            treatment=Variant(name="treatment", model=treatment_ref, milvus_alias=candidate_alias(live),
                              milvus_collection=treatment_collection),
            traffic=Traffic(treatment_percent=ramp[0].treatment_percent, ramp=ramp),
            assignment=Assignment(salt=experiment_id),
            guardrails=[Guardrail(**g) for g in cfg.guardrails],
            rollback=Rollback(
                alias=live,
                restore_collection=None if first_deployment else control_collection,
                instruction=(
                    f"`vsearch release rollback --rollout rollout.yaml`: before promotion it sets the treatment share to 0 "
                    f"(every user on control; the live alias {live} was never touched); after promotion it restores "
                    f"{restore}, together."
                ),
            ),
            live_alias=live,
            milvus_uri=milvus_uri or None,
            registry=registry or None,
            lineage=Lineage(**lineage) if lineage else None,
        )
    except (KeyError, TypeError, ValidationError) as err:
        if isinstance(err, ValidationError):
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or first.get("title", "")
            raise ConfigError(f"rollout config does not fit the rollout schema: {where}: {first['msg']}"[:300]) from err
        raise ConfigError(f"rollout config does not fit the rollout schema: {type(err).__name__}: {str(err)[:160]}") from err


def _project_image() -> str:
    """The one project image tag (vsearch.images), used unless the config names another."""
    from vsearch.images import IMAGE

    return IMAGE


def build_manifests(rollout, cfg: RolloutDefaults) -> list[dict]:
    """One KServe InferenceService per arm (``<name>-control``, ``<name>-treatment``).

    KServe's ``canaryTrafficPercent`` routes each *request* at random (and is ignored in
    RawDeployment mode before KServe 0.20), so a user would see both models: not an A/B test
    by user. Each arm therefore gets its own InferenceService at 100% serving its own model
    and alias, and the search front assigns users with the rollout's hash; the annotations
    carry the assignment so any front can reproduce it.
    """
    from vsearch.rollout.kserve import inference_service

    k = cfg.kserve
    docs = []
    for arm in (rollout.control, rollout.treatment):
        try:
            docs.append(inference_service(
                name=f"{k.name}-{arm.name}",
                namespace=str(k.namespace),
                image=str(k.image or _project_image()),
                # "{alias}" / "{model_version}" in the args are filled with the arm's.
                args=[str(a).format(alias=arm.milvus_alias, model_version=arm.model.version) for a in k.args],
                storage_uri=artifacts.durable_uri(arm.model.uri),  # s3:// for minio://: KServe reads no minio://
                model_version=arm.model.version,
                canary_percent=None,
                min_replicas=int(k.min_replicas),
                max_replicas=int(k.max_replicas),
                service_account=k.service_account,
                labels={"vsearch.io/experiment": rollout.experiment_id[:63], "vsearch.io/arm": arm.name},
                annotations={
                    "vsearch.io/experiment-id": rollout.experiment_id,
                    "vsearch.io/arm": arm.name,
                    "vsearch.io/model-version": arm.model.version,
                    "vsearch.io/milvus-alias": arm.milvus_alias,
                    "vsearch.io/assignment": (f"{rollout.assignment.hash}({rollout.assignment.salt}:{rollout.assignment.unit}) "
                                              f"% 10000 < {rollout.traffic.treatment_percent:g} * 100 -> treatment"),
                    "vsearch.io/blessing": rollout.blessing,
                },
            ))
        except (KeyError, ValueError) as err:
            raise ConfigError(f"rollout config 'kserve' section: {err}") from err
    return docs


def _check_registry(blessing, where: str, store: str) -> dict | None:
    """The registry's champion entry (None: none yet), when the blessing was judged against it."""
    from vsearch.registry import Registry

    current = Registry(store).current()
    champion = blessing.champion.version if blessing.champion else None
    if current is None:
        if champion is not None:
            raise DataError(where, "rollout refused: the registry has no champion but the blessing names one", detail=champion)
        return None
    if current["model_version"] != champion:
        raise DataError(where, "rollout refused: stale blessing, the registry's champion is another model",
                        detail=f"registry {current['model_version']}, blessing champion {champion}")
    return current


def arm_collections(store, rollout, arms=("control", "treatment")) -> dict[str, str]:
    """{arm: collection} when each arm's alias points at a verified collection its own model built.

    Raises `vsearch.indexing.store.EmbeddingSpaceMismatch` / `IndexError_` (one line) otherwise.
    The one check the writer, the release lifecycle and (per arm) the service share.
    """
    return {name: store.check_embedding_space(rollout.variants()[name].milvus_alias, rollout.variants()[name].model.version,
                                              artifacts.model_embed_dim(rollout.variants()[name].model.uri))
            for name in arms}


def check_arms(rollout, milvus_uri: str, index_cfg=None) -> dict[str, str]:
    """`arm_collections` on the Milvus at ``milvus_uri``."""
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import connect

    with connect(milvus_uri, index_cfg or load_index_config(None, [])) as store:
        return arm_collections(store, rollout)


def write_rollout(blessing_path: str | os.PathLike, out_dir: str | os.PathLike, cfg: RolloutDefaults | None = None, *,
                  registry: str | None = None, experiment_id: str | None = None, control_model: str | None = None,
                  run_id: str | None = None, control_uri: str | None = None, milvus_uri: str | None = None,
                  reference: str | None = None, control_reference: str | None = None) -> dict[str, Path]:
    """Write ``rollout.yaml`` + ``inferenceservice.yaml`` into ``out_dir`` (published atomically).

    Args:
        control_model: the control arm when the blessing has no champion (the baseline), as a
            folder or URI; ignored when the blessing has a champion.
        control_uri: the control's durable URI when ``control_model`` is where one pod mounted
            it (a KFP artifact's ``path``); the plan and the manifests name this.
        milvus_uri: check every arm's alias there before writing (and record it as the
            plan's Milvus); None: not checked.
        run_id: the KFP run writing the plan; the plan's ``lineage`` records it with the code version.
        reference: the candidate's drift reference (build_drift_reference's URI), recorded with
            the treatment arm; ``control_reference`` likewise for ``control_model``. With a
            champion, the control's is the one the registry records for it.
    """
    import yaml

    from vsearch.blessing import ModelRef, blessing_path as _file, read_blessing
    from vsearch.indexing.store import IndexError_
    from vsearch.rollout.schema import dump_rollout, load_rollout

    cfg = cfg if cfg is not None else load_rollout_defaults()
    blessing = read_blessing(blessing_path)
    uri = str(_file(blessing_path).resolve())
    if not blessing.blessed:
        raise DataError(uri, "rollout refused: the candidate is not blessed", detail=blessing.reason)
    champion = _check_registry(blessing, uri, registry) if registry else None
    control = None
    if control_model and blessing.champion is None:
        control = ModelRef("baseline", artifacts.durable_uri(control_uri or control_model), artifacts.model_version(control_model))
    references = {"treatment": reference,
                  "control": (champion or {}).get("drift_reference") if blessing.champion else control_reference}
    # The plan carries its own copy of the blessing (``blessing.json`` beside rollout.yaml): the
    # path the gate wrote it to may exist only in one pipeline pod.
    from vsearch.lineage import lineage

    rollout = build_rollout(blessing, BLESSING_COPY, cfg, experiment_id=experiment_id, control=control, milvus_uri=milvus_uri,
                            registry=registry, lineage=lineage(run_id), references=references)
    if milvus_uri:
        try:
            check_arms(rollout, milvus_uri)
        except IndexError_ as err:
            raise DataError(uri, f"rollout refused: {err}") from err
    manifests = build_manifests(rollout, cfg)
    import jsonschema

    from vsearch.rollout.kserve import validate_manifest

    for doc in manifests:  # a bad namespace, name or container field: one line, nothing written
        try:
            validate_manifest(doc)
        except jsonschema.ValidationError as err:
            raise ConfigError(f"rollout config 'kserve' section: {str(err.message)[:200]}") from err
    out = Path(out_dir)
    with artifacts.staged(out) as staging:
        shutil.copyfile(uri, staging / BLESSING_COPY)
        dump_rollout(rollout, staging / ROLLOUT_FILE)
        if load_rollout(staging / ROLLOUT_FILE) != rollout:  # the file must round-trip through the schema
            raise RuntimeError(f"{staging / ROLLOUT_FILE}: does not read back as written")
        (staging / KSERVE_FILE).write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    return {"rollout": out / ROLLOUT_FILE, "kserve": out / KSERVE_FILE, "blessing": out / BLESSING_COPY}


def main(argv: list[str] | None = None) -> int:
    """``vsearch rollout --blessing PATH --out DIR [--registry URI] [--milvus-uri URI] [--config YAML] [key=value ...]``."""
    parser = argparse.ArgumentParser(prog="vsearch rollout", description="Write rollout.yaml + per-arm KServe manifests from a blessing.")
    parser.add_argument("--blessing", required=True, help="blessing.json (or its folder) from vsearch gate")
    parser.add_argument("--out", required=True, help="folder for rollout.yaml and inferenceservice.yaml (replaced atomically)")
    parser.add_argument("--registry", help="champion registry: refuse a blessing judged against another champion")
    parser.add_argument("--milvus-uri", help="check that every arm's alias exists and was built by that arm's model")
    parser.add_argument("--config", help="rollout defaults YAML (default: configs/rollout.yaml)")
    parser.add_argument("--experiment-id", help="default: <prefix>-<candidate version>-vs-<control version>-<time>-<4 hex>")
    parser.add_argument("--control-model", help="control model (the baseline) when the blessing has no champion")
    parser.add_argument("--reference", help="the candidate's drift reference (snapshot folder or URI), recorded in the plan")
    parser.add_argument("--control-reference", help="the control model's drift reference when the blessing has no champion")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. alias=search_v1 kserve.namespace=search")
    args = parser.parse_args(argv)
    artifacts.check_out(args.out, [args.blessing, args.registry, args.control_model, args.config], ours=(ROLLOUT_FILE, KSERVE_FILE))
    cfg = load_rollout_defaults(args.config, args.overrides)
    paths = write_rollout(args.blessing, args.out, cfg, registry=args.registry, experiment_id=args.experiment_id,
                          control_model=args.control_model, milvus_uri=args.milvus_uri, reference=args.reference,
                          control_reference=args.control_reference)
    print(f"rollout: {paths['rollout']}\nkserve:  {paths['kserve']}")
    return 0
