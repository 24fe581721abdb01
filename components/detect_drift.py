"""detect_drift: a current window against the model's drift reference; says if retraining is due."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def detect_drift(
    model: Input[Model],
    reference: Input[Dataset],
    current: Input[Dataset],
    drift_report: Output[Artifact],
    report: Output[HTML],
    queries_report: Output[HTML],
    products_report: Output[HTML],
    metrics: Output[Metrics],
    config: str = "drift",
    overrides: Optional[List[str]] = None,
    since: str = "",
    until: str = "",
) -> bool:
    """Compare recent queries and catalog (embedded by the model) with the model's drift reference.

    Args:
        model: The serving model folder; it embeds the current window.
        reference: That model's drift reference (build_drift_reference after its training);
            one built by another model is refused.
        current: Recent data in the vsearch data contract (queries and catalog).
        config: Drift preset name or YAML path (tests, thresholds, sample sizes).
        overrides: Dotted drift overrides, e.g. "sample.max_queries=200".
        since: Start of the current window (event_timestamp, ISO 8601); empty: all rows.
        until: End of the current window; empty: all rows.

    Returns:
        drift_report: Folder with drift.json (every check), index.html and the Evidently reports.
        report: The drift summary (HTML): the verdict and every check.
        queries_report: Evidently's report on the query window (HTML, self-contained).
        products_report: Evidently's report on the catalog window (HTML, self-contained).
        metrics: drift (1/0), drifted checks, checks.
        Output: True when drift was detected, i.e. retraining is due.
    """
    import shutil

    from pathlib import Path

    from vsearch.monitoring.drift import REPORT_HTML, detect_drift as detect, load_drift_config, summary_html

    result = detect(reference.path, current.path, drift_report.path, load_drift_config(config, list(overrides or [])),
                    model=model.path, since=since or None, until=until or None,
                    model_uri=model.uri, current_uri=current.uri)  # records name URIs, not this pod's paths
    # One HTML output per page: the KFP UI shows each artifact alone and cannot follow links between them.
    for side, out in (("queries", queries_report), ("products", products_report)):
        shutil.copyfile(Path(drift_report.path) / REPORT_HTML[side], out.path)
    Path(report.path).write_text(summary_html(result, {"queries": "this step's queries_report output",
                                                       "products": "this step's products_report output"}))
    drifted = result["drifted_checks"]
    metrics.log_metric("drift", 1.0 if result["drift"] else 0.0)
    metrics.log_metric("drifted_checks", float(len(drifted)))
    drift_report.metadata.update({"drift": bool(result["drift"]), "summary": {k: bool(v) for k, v in result["summary"].items()},
                                  "drifted_checks": [str(c) for c in drifted][:20]})
    return bool(result["drift"])
