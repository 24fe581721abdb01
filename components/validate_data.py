"""validate_data: validate a data folder (schema, images, leakage) before anything trains on it."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate_data(
    data: Input[Dataset],
    validation: Output[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
    min_image_size: int = 32,
) -> None:
    """Run the Great Expectations suites and image probes on a dataset; fail the step if invalid.

    Args:
        data: Dataset folder following the vsearch data contract.
        min_image_size: Smallest accepted image side, pixels.

    Returns:
        validation: Folder with validation.json (every check, offending rows) and validation.html.
        report: The validation report (HTML), written whether the data passes or not.
        metrics: checks, failed (count), rows per manifest, images probed, seconds.
    """
    import dataclasses
    import shutil

    from vsearch import artifacts
    from vsearch.schema import DataError
    from vsearch.validation.report import HTML_FILE, write_report
    from vsearch.validation.suites import ValidationConfig
    from vsearch.validation.validate import validate_dataset

    result = validate_dataset(data.path, dataclasses.replace(ValidationConfig(), min_image_size=min_image_size))
    staging = artifacts.fresh_staging(validation.path)
    try:
        write_report(result, staging)
        artifacts.publish(staging, validation.path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.copyfile(f"{validation.path}/{HTML_FILE}", report.path)
    stats = result.statistics
    metrics.log_metric("checks", float(stats["checks"]))
    metrics.log_metric("failed", float(stats["failed"]))
    metrics.log_metric("images", float(stats["images"]))
    metrics.log_metric("seconds", round(float(stats["seconds"]), 3))
    for manifest, rows in sorted(stats["rows"].items()):
        metrics.log_metric(f"rows.{manifest.removesuffix('.parquet')}", float(rows))
    validation.metadata.update({"success": result.success, "failed": stats["failed"]})
    if not result.success:
        first = result.failures[0]
        row = next((ex["row"] for ex in first.examples if ex.get("row") is not None), None)
        raise DataError(f"{data.path}/{first.manifest}", first.rule, row,
                        detail=f"{len(result.failures)} check(s) failed; first: {first.line()} (report: {report.path})")
