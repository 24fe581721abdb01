"""write_rollout_config: the release plan of a blessed model (rollout.yaml + per-arm InferenceServices), in review."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def write_rollout_config(
    blessing: Input[Artifact],
    index: Input[Artifact],
    rollout: Output[Artifact],
    summary: Output[Markdown],
    reference: Optional[Input[Dataset]] = None,
    control_model: Optional[Input[Model]] = None,
    control_reference: Optional[Input[Dataset]] = None,
    control_index: Optional[Input[Artifact]] = None,
    registry: str = "",
    milvus_uri: str = "",
    alias: str = "vsearch_serving",
    overrides: Optional[List[str]] = None,
    run_id: str = "",
) -> None:
    """Write the release plan: rollout.yaml (arms, ramp, guardrails) and the per-arm InferenceServices.

    The release then waits in review: nothing live has moved. With a registry and a Milvus
    URI the release is opened there (`vsearch release status --rollout rollout.yaml`).

    Args:
        blessing: The gate's blessing folder; a candidate that is not blessed is refused.
        index: The candidate's verified collection under the candidate alias (backfill_embeddings).
        reference: The candidate's drift reference (build_drift_reference); the plan records its URI.
        control_model: The control arm when the blessing has no champion yet (first
            deployment: the image-only baseline); otherwise the champion is the control.
        control_reference: The control_model's drift reference (the champion's comes from the registry).
        control_index: The baseline's collection of a first deployment (backfill_embeddings).
        registry: Champion registry URI; a blessing judged against another champion is refused.
        milvus_uri: The Milvus both arms live in; every arm's alias is checked there.
        alias: The live alias (never moved here).
        overrides: Dotted rollout overrides, e.g. "kserve.namespace=search".
        run_id: This KFP run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER), recorded in the plan's lineage.

    Returns:
        rollout: Folder with rollout.yaml and inferenceservice.yaml.
        summary: Experiment id, arms, collections, ramp and the reviewer's next commands (Markdown).
    """
    from vsearch.blessing import read_blessing
    from vsearch.rollout.schema import load_rollout
    from vsearch.rollout.writer import load_rollout_defaults, write_rollout

    cfg = load_rollout_defaults(None, [f"alias={alias}", *list(overrides or [])])
    has_champion = read_blessing(blessing.path).has_champion
    control = control_model if control_model is not None and not has_champion else None
    # The plan and the KServe manifests name the control (and the drift references) by URI; its version is read here.
    paths = write_rollout(blessing.path, rollout.path, cfg, registry=registry or None,
                          control_model=control.path if control else None, control_uri=control.uri if control else None,
                          milvus_uri=milvus_uri or None, run_id=run_id or None,
                          reference=reference.uri if reference is not None else None,
                          control_reference=control_reference.uri if control and control_reference is not None else None)
    config = load_rollout(paths["rollout"])
    if registry and milvus_uri:
        from vsearch.release.lifecycle import Release

        Release(paths["rollout"]).ensure_open(actor="pipeline")
    ramp = ", ".join(f"{s.treatment_percent:g}%" for s in config.traffic.ramp)
    lines = [f"# Release {config.experiment_id}: in review", "",
             "| arm | model | alias | collection |", "|---|---|---|---|"]
    for arm in (config.control, config.treatment):
        lines.append(f"| {arm.name} | {arm.model.version} | {arm.milvus_alias} | {arm.milvus_collection} |")
    lines += ["", f"Ramp: {ramp}. Live alias {config.live_alias}: untouched. Candidate index: "
                  f"{index.metadata.get('collection', '?')}"
                  + (f"; baseline index: {control_index.metadata.get('collection')}" if control_index is not None
                     and control_index.metadata.get("collection") else "") + ".",
              "", f"Lineage: plan by run `{config.lineage.run_id}`, code `{config.lineage.code_version}`.",
              "", "Next: read the report and the gate page, then `vsearch release approve --rollout rollout.yaml`."]
    with open(summary.path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    rollout.metadata.update({"experiment_id": config.experiment_id, "treatment": config.treatment.model.version,
                             "control": config.control.model.version, "status": "in_review",
                             "lineage": config.lineage.model_dump()})
