"""The model pipeline: data -> image-only + 3-tower -> 4-tower from 3-tower -> evaluate.

Two entry points: ``vsearch-model`` generates the benchmark first (``synth_data``);
``vsearch-model-import`` imports the dataset at ``data_uri`` (a folder of the data contract,
e.g. on object storage). Two DAGs rather than a ``dsl.If`` + ``dsl.OneOf`` on the source: a
OneOf over artifacts does not run under kfp.local 2.17. Training steps get
the GPU wiring of the compile-time config. The body runs inside ``dsl.ExitHandler``
(``notify_run`` records the final status and posts a failure where a webhook is configured).
The gate, indexing and rollout stages join this DAG in the training pipeline.
"""

# No `from __future__ import annotations`: KFP reads the real annotations of the pipeline function.
from typing import List

from pipelines.config import PipelineConfig

NAME = "vsearch-model"
IMPORT_NAME = "vsearch-model-import"


def train_and_evaluate(data, cfg: PipelineConfig, *, image_only_config, three_tower_config, four_tower_config,
                       train_overrides, eval_overrides) -> dict:
    """The middle of the model and training pipelines: train the image-only baseline, the 3-tower
    and the 4-tower (initialised from the 3-tower) on ``data``, evaluate all three on its test
    queries. Returns the tasks: ``image_only``, ``three_tower``, ``four_tower``, ``evaluation``."""
    from components.evaluate_model import evaluate_model
    from components.train_model import train_model
    from pipelines.wiring import configure

    image_only = configure(
        train_model(data=data, config=image_only_config, overrides=train_overrides), "Train image-only baseline", cfg
    )
    three = configure(train_model(data=data, config=three_tower_config, overrides=train_overrides), "Train 3-tower", cfg)
    four = configure(
        train_model(data=data, config=four_tower_config, overrides=train_overrides, init_model=three.outputs["model"]),
        "Train 4-tower (from 3-tower)",
        cfg,
    )
    evaluation = configure(
        evaluate_model(
            data=data,
            image_only=image_only.outputs["model"],
            three_tower=three.outputs["model"],
            four_tower=four.outputs["model"],
            config=three_tower_config,
            overrides=eval_overrides,
        ),
        "Evaluate models",
        cfg,
    )
    return {"image_only": image_only, "three_tower": three, "four_tower": four, "evaluation": evaluation}


def build(cfg: PipelineConfig):
    """The model pipeline on the generated benchmark (``synth_data`` first)."""
    from kfp import dsl

    from components.synth_data import synth_data
    from pipelines.wiring import configure, notify_on_exit

    @dsl.pipeline(
        name=NAME,
        description="Generate the benchmark, train the image-only baseline, the 3-tower and the 4-tower "
        "(from 3-tower) models, evaluate them.",
    )
    def model_pipeline(
        preset: str = "default",
        seed: int = 0,
        image_only_config: str = "image_only",
        three_tower_config: str = "three_tower",
        four_tower_config: str = "four_tower",
        train_overrides: List[str] = [],
        eval_overrides: List[str] = [],
    ):
        with notify_on_exit(NAME, cfg):
            synth = configure(synth_data(preset=preset, seed=seed), "Generate street-to-shop benchmark", cfg)
            train_and_evaluate(synth.outputs["data"], cfg, image_only_config=image_only_config,
                               three_tower_config=three_tower_config, four_tower_config=four_tower_config,
                               train_overrides=train_overrides, eval_overrides=eval_overrides)

    return model_pipeline


def build_import(cfg: PipelineConfig):
    """The model pipeline on an existing dataset (``data_uri``: a folder of the data contract)."""
    from kfp import dsl

    from pipelines.wiring import import_dataset, notify_on_exit

    @dsl.pipeline(
        name=IMPORT_NAME,
        description="Import a dataset, train the image-only baseline, the 3-tower and the 4-tower "
        "(from 3-tower) models, evaluate them.",
    )
    def model_import_pipeline(
        data_uri: str,
        image_only_config: str = "image_only",
        three_tower_config: str = "three_tower",
        four_tower_config: str = "four_tower",
        train_overrides: List[str] = [],
        eval_overrides: List[str] = [],
    ):
        with notify_on_exit(IMPORT_NAME, cfg):
            imported = import_dataset(data_uri, cfg)
            train_and_evaluate(imported.output, cfg, image_only_config=image_only_config,
                               three_tower_config=three_tower_config, four_tower_config=four_tower_config,
                               train_overrides=train_overrides, eval_overrides=eval_overrides)

    return model_import_pipeline
