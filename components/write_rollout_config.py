"""write_rollout_config: the A/B rollout config and KServe canary manifest of a blessed model."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def write_rollout_config(
    blessing: Input[Artifact],
    index: Input[Artifact],
    rollout: Output[Artifact],
    summary: Output[Markdown],
    control_model: Optional[Input[Model]] = None,
    registry: str = "",
    overrides: Optional[List[str]] = None,
) -> None:
    """Write rollout.yaml (traffic ramp, guardrails, rollback) and inferenceservice.yaml.

    Args:
        blessing: The gate's blessing folder; a candidate that is not blessed is refused.
        index: The verified Milvus collection of the candidate (backfill_embeddings); the
            rollout is written only after the candidate's index exists.
        control_model: The control arm when the blessing has no champion yet (first
            deployment: the image-only baseline); otherwise the champion is the control.
        registry: Champion registry URI; a blessing judged against another champion is refused.
        overrides: Dotted rollout overrides, e.g. "kserve.namespace=search".

    Returns:
        rollout: Folder with rollout.yaml and inferenceservice.yaml.
        summary: Experiment id, arms, collections and ramp (Markdown).
    """
    from vsearch.evaluation.gate import load_blessing
    from vsearch.rollout.schema import load_rollout
    from vsearch.rollout.writer import load_rollout_defaults, write_rollout

    cfg = load_rollout_defaults(None, list(overrides or []))
    has_champion = load_blessing(blessing.path).get("champion") is not None
    control = control_model.path if control_model is not None and not has_champion else None
    paths = write_rollout(blessing.path, rollout.path, cfg, registry=registry or None, control_model=control)
    config = load_rollout(paths["rollout"])
    ramp = ", ".join(f"{s.treatment_percent}%" for s in config.traffic.ramp)
    lines = [f"# Rollout {config.experiment_id}", "",
             "| arm | model | alias | collection |", "|---|---|---|---|"]
    for arm in (config.control, config.treatment):
        lines.append(f"| {arm.name} | {arm.model.version} | {arm.milvus_alias} | {arm.milvus_collection} |")
    lines += ["", f"Ramp: {ramp}. Candidate index: {index.metadata.get('collection', '?')} "
                  f"(alias {index.metadata.get('alias', '?')})."]
    with open(summary.path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    rollout.metadata.update({"experiment_id": config.experiment_id, "treatment": config.treatment.model.version,
                             "control": config.control.model.version})
