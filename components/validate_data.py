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
    """Run the Great Expectations suites and image probes on a dataset; publish the verdict and report.

    The step succeeds on invalid data too, so that KFP publishes the report (a failed task
    publishes no outputs); the run stops in the next step (build_training_set), which refuses
    a failed validation naming the first failing file, rule and row.

    Args:
        data: Dataset folder following the vsearch data contract.
        min_image_size: Smallest accepted image side, pixels.

    Returns:
        validation: Folder with validation.json (every check, offending rows) and validation.html;
            metadata success (bool) and failed (count of failed checks).
        report: The validation report (HTML), published whether the data passes or not.
        metrics: checks, failed (count), rows per manifest, images probed, seconds.
    """
    import dataclasses
    import shutil
    import sys

    from vsearch import artifacts
    from vsearch.validation.report import HTML_FILE, write_report
    from vsearch.validation.suites import ValidationConfig
    from vsearch.validation.validate import validate_dataset

    result = validate_dataset(data.path, dataclasses.replace(ValidationConfig(), min_image_size=min_image_size),
                              data_uri=data.uri)  # the report names the URI, not this pod's path
    with artifacts.staged(validation.path) as staging:
        write_report(result, staging)
    shutil.copyfile(f"{validation.path}/{HTML_FILE}", report.path)
    stats = result.statistics
    metrics.log_metric("checks", float(stats["checks"]))
    metrics.log_metric("failed", float(stats["failed"]))
    metrics.log_metric("images", float(stats["images"]))
    metrics.log_metric("seconds", round(float(stats["seconds"]), 3))
    for manifest, rows in sorted(stats["rows"].items()):
        metrics.log_metric(f"rows.{manifest.removesuffix('.parquet')}", float(rows))
    validation.metadata.update({"success": result.success, "failed": stats["failed"]})
    if not result.success:  # said here; the next step stops the run (see the docstring)
        print(f"validate_data: {len(result.failures)} check(s) failed; first: {result.failures[0].line()}", file=sys.stderr)
