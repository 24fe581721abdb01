"""gate_model: bless or reject the candidate against the image-only baseline and the champion."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def gate_model(
    evaluation: Input[Dataset],
    blessing: Output[Artifact],
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    candidate: str = "four_tower",
    config: str = "gate",
    registry: str = "",
    run_id: str = "",
) -> bool:
    """Judge the candidate on the shared evaluation with the configured thresholds (fails closed).

    Args:
        evaluation: Evaluation folder (evaluate_model) holding the candidate and the baseline.
        candidate: The candidate's model name in the evaluation (four_tower, three_tower).
        config: Gate preset name or YAML path inside the image (thresholds per metric).
        registry: Champion registry URI (folder or fsspec URI); empty: no champion, the
            champion checks are skipped and the decision rests on baseline and value checks.
        run_id: This KFP run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER), recorded in the blessing's lineage.

    Returns:
        blessing: Folder with blessing.json: every check, the numbers, the reason.
        report: Evaluation report with the gate section (HTML).
        summary: The checks as a Markdown table.
        metrics: blessed (1/0), passed, failed and skipped checks.
        Output: True when blessed; the pipeline's dsl.If branches on it.
    """
    import shutil

    from vsearch.evaluation.gate import BLESSING_FILE, GATE_REPORT_FILE, load_gate_config, run_gate

    result = run_gate(evaluation.path, blessing.path, load_gate_config(config), candidate_name=candidate, run_id=run_id or None,
                      registry=registry or None, evaluation_uri=evaluation.uri)
    shutil.copyfile(f"{blessing.path}/{GATE_REPORT_FILE}", report.path)
    rows = ["| check | status | detail |", "|---|---|---|"]
    counts = {"pass": 0, "fail": 0, "skipped": 0}
    for check in result.checks:
        counts[check["status"]] += 1
        rows.append(f"| {check['name']} | {check['status']} | {check['detail']} |")
    verdict = "BLESSED" if result.blessed else "NOT BLESSED"
    with open(summary.path, "w") as fh:
        fh.write(f"**{candidate} ({result.candidate.version}): {verdict}** - {result.reason}\n\n" + "\n".join(rows) + "\n")
    metrics.log_metric("blessed", 1.0 if result.blessed else 0.0)
    for status, n in counts.items():
        metrics.log_metric(f"checks_{status}", float(n))
    blessing.metadata.update({"blessed": result.blessed, "candidate": result.candidate.version,
                              "reason": result.reason, "file": BLESSING_FILE, "lineage": result.lineage})
    return bool(result.blessed)
