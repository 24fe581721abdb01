"""build_training_set: the point-in-time training set (Feast) of a validated dataset."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def build_training_set(data: Input[Dataset], validation: Input[Dataset], training_set: Output[Dataset],
                       metrics: Output[Metrics]) -> None:
    """Join each interaction with the product title valid at its event time (Feast, point in time).

    Args:
        data: Dataset folder following the vsearch data contract.
        validation: The passing validation of that dataset (validate_data); its presence
            orders this step after validation, and a failed one is refused (DataError naming
            the first failing file, rule and row): the run stops here on invalid data.

    Returns:
        training_set: A data folder of the same contract whose interactions carry the
            point-in-time ``title``, plus training_set.json (provenance).
        metrics: rows, products, titles differing from the current catalog, seconds.
    """
    from vsearch.features.training_set import build_training_set as build
    from vsearch.validation.report import require_passed

    require_passed(validation.path, data.path)  # the run stops here on invalid data
    summary = build(data.path, training_set.path, data_uri=data.uri)  # provenance names the URI, not this pod's path
    for key in ("rows", "products", "titles_differing_from_catalog", "images"):
        metrics.log_metric(key, float(summary[key]))
    metrics.log_metric("seconds", float(summary["seconds"]))
    training_set.metadata.update({k: summary[k] for k in ("rows", "products", "feature_service")})
