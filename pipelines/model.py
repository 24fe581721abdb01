"""The model pipeline: data -> image-only + 3-tower -> 4-tower from 3-tower -> evaluate.

    train_model x3 (image-only baseline, 3-tower, 4-tower initialised from the 3-tower)
      -> build_drift_reference after each (the drift monitor's reference window of that model,
         its own artifact: the training data snapshotted under the trained model)
      -> evaluate_model (all three on the same test queries)

Two entry points: ``vsearch-model`` generates the benchmark first (``synth_data``);
``vsearch-model-import`` imports the dataset at ``data_uri`` (a folder of the data contract,
e.g. on object storage). Two DAGs rather than a ``dsl.If`` + ``dsl.OneOf`` on the source: a
OneOf over artifacts does not run under kfp.local 2.17; both share their parameters
(``pipelines.wiring``'s groups). Training steps get the GPU wiring of the compile-time config.
The body runs inside ``dsl.ExitHandler`` (``notify_run`` records the final status and posts
a failure where a webhook is configured). The gate, indexing and rollout stages join this DAG
in the training pipeline.
"""

from pipelines.config import PipelineConfig

NAME = "vsearch-model"
IMPORT_NAME = "vsearch-model-import"
DESCRIPTION = "train the image-only baseline, the 3-tower and the 4-tower (from 3-tower) models, evaluate them."
MODELS = ("image_only", "three_tower", "four_tower")


def _train(data, cfg: PipelineConfig, config, overrides, label: str, init: tuple | None = None) -> dict:
    """One ``train_model`` of the model ``label`` (``init``: (label, model output) it starts from)
    and the ``build_drift_reference`` of its model: ``{"train", "reference"}``."""
    from components.build_drift_reference import build_drift_reference
    from components.train_model import train_model
    from pipelines.wiring import configure

    start = {} if init is None else {"init_model": init[1]}
    train = configure(train_model(data=data, config=config, overrides=overrides, **start),
                      f"Train {label}" + (f" (from {init[0]})" if init else ""), cfg)
    reference = configure(build_drift_reference(model=train.outputs["model"], data=data), f"Build drift reference ({label})",
                          cfg)
    return {"train": train, "reference": reference}


def train_and_evaluate(data, cfg: PipelineConfig, *, image_only_config, three_tower_config, four_tower_config,
                       train_overrides, eval_overrides) -> dict:
    """The middle of the model and training pipelines: train the image-only baseline, the 3-tower
    and the 4-tower (initialised from the 3-tower) on ``data``, each with its drift reference,
    and evaluate all three on its test queries.

    Returns:
        ``{name: {"train": task, "reference": task}}`` for ``MODELS``, and ``evaluation``: the task.
    """
    from components.evaluate_model import evaluate_model
    from pipelines.wiring import configure

    image_only = _train(data, cfg, image_only_config, train_overrides, "image-only baseline")
    three = _train(data, cfg, three_tower_config, train_overrides, "3-tower")
    four = _train(data, cfg, four_tower_config, train_overrides, "4-tower", init=("3-tower", three["train"].outputs["model"]))
    trained = dict(zip(MODELS, (image_only, three, four)))
    evaluation = configure(
        evaluate_model(data=data, config=three_tower_config, overrides=eval_overrides,
                       **{name: steps["train"].outputs["model"] for name, steps in trained.items()}),
        "Evaluate models",
        cfg,
    )
    return {**trained, "evaluation": evaluation}


def _pipeline(cfg: PipelineConfig, name: str, source: tuple, description: str):
    from kfp import dsl

    from pipelines.wiring import MODEL_PARAMS, notify_on_exit, source_data, with_parameters

    @dsl.pipeline(name=name, description=description)
    @with_parameters(source, MODEL_PARAMS)
    def model_pipeline(**params):
        with notify_on_exit(name, cfg):
            train_and_evaluate(source_data(params, cfg), cfg, **{key: params[key] for key, _, _ in MODEL_PARAMS})

    return model_pipeline


def build(cfg: PipelineConfig):
    """The model pipeline on the generated benchmark (``synth_data`` first)."""
    from pipelines.wiring import SYNTH_PARAMS

    return _pipeline(cfg, NAME, SYNTH_PARAMS, "Generate the benchmark, " + DESCRIPTION)


def build_import(cfg: PipelineConfig):
    """The model pipeline on an existing dataset (``data_uri``: a folder of the data contract)."""
    from pipelines.wiring import IMPORT_PARAMS

    return _pipeline(cfg, IMPORT_NAME, IMPORT_PARAMS, "Import a dataset, " + DESCRIPTION)
