"""materialize_features: load the serving online store (Feast) with the validated dataset's products."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def materialize_features(data: Input[Dataset], validation: Input[Dataset], materialization: Output[Artifact],
                         metrics: Output[Metrics]) -> None:
    """Materialize every product's latest features into the online store the search service reads.

    The store and registry come from $VSEARCH_FEAST_ONLINE_STORE / $VSEARCH_FEAST_REGISTRY
    (Secret vsearch-feast); without them the step writes nothing and says so.

    Args:
        data: Dataset folder following the vsearch data contract.
        validation: Its validation (validate_data); a failed one is refused.

    Returns:
        materialization: materialization.json: materialized (bool), online store type, registry,
            products, feature service, end time; or why nothing was written.
        metrics: materialized (1/0), products.
    """
    import json

    from vsearch.features.online import materialize_configured
    from vsearch.validation.report import require_passed

    require_passed(validation.path, data.path)  # only validated data reaches serving
    summary = materialize_configured(data.path)
    with open(materialization.path, "w") as fh:
        json.dump(summary, fh, indent=2, sort_keys=True)
    materialization.metadata.update({k: summary[k] for k in ("materialized", "reason", "online_store", "products") if k in summary})
    metrics.log_metric("materialized", 1.0 if summary["materialized"] else 0.0)
    metrics.log_metric("products", float(summary.get("products", 0)))
