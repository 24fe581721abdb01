"""build_drift_reference: the drift monitor's reference window of a trained model, as its own artifact."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def build_drift_reference(
    model: Input[Model],
    data: Input[Dataset],
    reference: Output[Dataset],
    config: str = "drift",
    overrides: Optional[List[str]] = None,
) -> None:
    """Snapshot the training data under the trained model: what detect_drift compares recent data with.

    Args:
        model: The trained model folder (train_model).
        data: The data the model was trained on (vsearch data contract).
        config: Drift preset name or YAML path; its sample section sizes the snapshot.
        overrides: Dotted drift overrides, e.g. "sample.max_queries=200".

    Returns:
        reference: Snapshot folder (queries.parquet, products.parquet, snapshot.json); its URI
            is the monitoring pipeline's reference_uri (the release plan and the registry's
            champion record it).
    """
    from vsearch.monitoring.drift import load_drift_config
    from vsearch.monitoring.reference import build_reference

    sample = load_drift_config(config, list(overrides or [])).sample
    # Records name the artifacts' URIs, not this pod's mount paths.
    meta = build_reference(model.path, data.path, reference.path, sample, model_uri=model.uri, data_uri=data.uri)
    reference.metadata.update({k: meta[k] for k in ("model_version", "queries", "products", "low_confidence_threshold")})
