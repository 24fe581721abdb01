"""train_model: train one image-only / 3-tower / 4-tower model from a named config."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_model(
    data: Input[Dataset],
    config: str,
    model: Output[Model],
    metrics: Output[Metrics],
    overrides: Optional[List[str]] = None,
    init_model: Optional[Input[Model]] = None,
) -> None:
    """Train one multi-tower model and publish its folder (safetensors, config, tokenizer).

    Args:
        data: Dataset folder following the vsearch data contract.
        config: Config preset name (image_only, three_tower, four_tower, tiny ...) or a
            YAML path inside the image.
        overrides: Dotted config overrides such as "train.max_steps=20".
        init_model: A model folder to start from (the 4-tower model starts from the
            3-tower one).

    When the pipeline config enables ``trainjob``, the step sets ``VSEARCH_TRAINJOB`` and
    trains on several nodes through a Kubeflow Trainer TrainJob instead of in-process.

    Returns:
        model: The trained model folder (model.safetensors, vsearch_model.json, backbone
            configs, tokenizer, train_summary.json).
        metrics: Training summary: steps, seconds, samples per second, final loss.
    """
    import os

    from vsearch.artifacts import model_version
    from vsearch.config import load_config
    from vsearch.training import trainjob
    from vsearch.training.loop import train

    cfg = load_config(config, list(overrides or []))
    init = init_model.path if init_model is not None else None
    settings = os.environ.get(trainjob.ENV_VAR)
    if settings:
        # Multi-node (pipeline config `trainjob.enabled`): a Kubeflow TrainJob trains through
        # the shared PVC while this step waits; docs/trainjob.md.
        summary = trainjob.launch(settings, config=config, overrides=list(overrides or []), data_dir=data.path,
                                  out_dir=model.path, run_id=model.uri, init=init)
    else:
        # restart: a retried attempt starts clean rather than resuming another pod's leftovers.
        # Records (the train summary) name the artifacts' URIs, not this pod's mount paths.
        uris = {"data": data.uri, "out": model.uri, **({"init": init_model.uri} if init_model is not None else {})}
        summary = train(cfg, data.path, model.path, init=init, restart=True, uris=uris)
    model.metadata.update(
        {"config": config, "name": cfg.name, "towers": list(cfg.model.towers), "version": model_version(model.path)}
    )
    metrics.log_metric("steps", float(summary["steps"]))
    metrics.log_metric("seconds", round(float(summary["seconds"]), 3))
    metrics.log_metric("samples_per_s", round(float(summary["samples_per_s"]), 3))
    metrics.log_metric("final_loss", round(float(summary["final"]["loss"]), 6))
