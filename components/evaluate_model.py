"""evaluate_model: evaluate the baseline and candidate models on the same test sets."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_model(
    data: Input[Dataset],
    image_only: Input[Model],
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[HTML],
    summary: Output[Markdown],
    three_tower: Optional[Input[Model]] = None,
    four_tower: Optional[Input[Model]] = None,
    config: str = "three_tower",
    overrides: Optional[List[str]] = None,
) -> None:
    """Evaluate image-only (the baseline) and the multimodal models on the test split.

    Args:
        data: Dataset folder following the vsearch data contract.
        image_only: The image-only baseline model.
        three_tower: The 3-tower model, if trained.
        four_tower: The 4-tower model, if trained.
        config: Config preset whose eval section is used.
        overrides: Dotted overrides such as "eval.n_boot=200".

    Returns:
        evaluation: Folder with metrics.json (the metrics contract), per_query.parquet,
            curves.json and report.html.
        metrics: Headline metrics per model, "<model>.<metric>": recall@1/5/10, mrr and
            multimodal_recall@10 (higher is better), cross_category_fp@10 (lower is better).
        report: The self-contained HTML report (CIs, Recall@K curves, examples).
        summary: The metrics table as Markdown.
    """
    import shutil

    from vsearch.config import load_config
    from vsearch.evaluation.evaluate import METRICS_FILE, REPORT_FILE, evaluate

    models, uris = {"image_only": image_only.path}, {"image_only": image_only.uri}
    for name, artifact in (("three_tower", three_tower), ("four_tower", four_tower)):
        if artifact is not None:
            models[name], uris[name] = artifact.path, artifact.uri
    # Records (blessing, registry, rollout) name the artifacts' URIs, not this pod's mount paths.
    result = evaluate(models, data.path, evaluation.path, load_config(config, list(overrides or [])).eval, model_uris=uris,
                      data_uri=data.uri)
    shutil.copyfile(f"{evaluation.path}/{REPORT_FILE}", report.path)
    keys = [k for k in next(iter(result["models"].values())) if k != "ci95"]
    rows = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, values in result["models"].items():
        rows.append(f"| {name} | " + " | ".join(f"{values[k]:.4f}" for k in keys) + " |")
        for k in keys:
            metrics.log_metric(f"{name}.{k}", round(float(values[k]), 6))
    with open(summary.path, "w") as fh:
        fh.write("\n".join(rows) + "\n")
    evaluation.metadata["models"] = sorted(models)
    evaluation.metadata["metrics_file"] = METRICS_FILE
