"""The training pipeline: validate -> training set -> train -> evaluate -> gate -> a release in review, or why not.

    validate_data -> build_training_set (Feast, point in time; stops the run on invalid data)
                  -> materialize_features (the serving online store, where one is configured)
      -> train_model image-only baseline, 3-tower -> 4-tower (initialised from the 3-tower)
         -> build_drift_reference after each (the drift monitor's reference window of that model)
      -> evaluate_model (all three on the same test queries)
      -> gate_model (4-tower vs the baseline and the registry's champion; fails closed)
      -> dsl.If(blessed):  backfill_embeddings x2: the candidate (own versioned collection,
                           verified, under <alias>_candidate) and, on a first deployment only,
                           the baseline as the control (under <alias>_baseline)
                           -> write_rollout_config (the release plan: arms with their models and
                           drift references, ramp, guardrails, per-arm InferenceServices; the
                           release opens in review)
         dsl.Else:         record_rejection (the gate's reasons; nothing indexed or rolled out)

The body runs inside ``dsl.ExitHandler``: ``notify_run`` records the final status, and posts
a failure to a webhook where one is configured. Validation publishes its report even on bad
data (a failed task publishes nothing); the next step stops the run.

The live alias is never moved here: only `vsearch release promote` (after review and the
A/B test) moves it, together with the registry's champion.

Each model's drift reference is its own artifact (``build_drift_reference``); the release
plan records each arm's, ``vsearch release promote`` the champion's in the registry, and the
monitoring pipeline imports it by that URI (``reference_uri``). Two entry points, as for the
model pipeline: ``vsearch-training`` generates the benchmark first; ``vsearch-training-import``
imports the dataset at ``data_uri``; both share their parameters (``pipelines.wiring``). The gate returns a single bool (not a NamedTuple field)
and the branch has an Else: kfp.local skips a dsl.If on a NamedTuple field silently.
"""

from typing import List

from pipelines.config import PipelineConfig

NAME = "vsearch-training"
IMPORT_NAME = "vsearch-training-import"
DESCRIPTION = ("Validate the data, build the point-in-time training set, train the image-only baseline, the 3-tower "
               "and the 4-tower models, evaluate, gate; if blessed: index the candidate under its candidate alias and "
               "write the release plan for review (the live alias is not moved), else record why not.")
# The gate, indexing and release parameters (after the source's and pipelines.wiring.MODEL_PARAMS).
RELEASE_PARAMS = (("gate_config", str, "gate"), ("registry", str, ""), ("milvus_uri", str, ""), ("alias", str, "vsearch_serving"),
                  ("index_overrides", List[str], []), ("rollout_overrides", List[str], []))


def _stages(data, cfg: PipelineConfig, *, gate_config, registry, milvus_uri, alias, index_overrides, rollout_overrides,
            **models) -> None:
    """Everything after the source: validation, the training set, ``train_and_evaluate`` with
    ``models`` (its keyword arguments), the gate and either branch."""
    from kfp import dsl

    from components.backfill_embeddings import backfill_embeddings
    from components.build_training_set import build_training_set
    from components.gate_model import gate_model
    from components.materialize_features import materialize_features
    from components.record_rejection import record_rejection
    from components.validate_data import validate_data
    from components.write_rollout_config import write_rollout_config
    from pipelines.model import train_and_evaluate
    from pipelines.wiring import configure

    validation = configure(validate_data(data=data), "Validate data", cfg)
    training = configure(
        build_training_set(data=data, validation=validation.outputs["validation"]),
        "Build training set (Feast, point in time)",
        cfg,
    )
    train_data = training.outputs["training_set"]
    # The serving online store gets the products of validated data (catalog facts, whatever the gate says).
    configure(materialize_features(data=data, validation=validation.outputs["validation"]).after(training),
              "Materialize product features (online store)", cfg)
    trained = train_and_evaluate(train_data, cfg, **models)
    image_only, four, evaluation = trained["image_only"], trained["four_tower"], trained["evaluation"]
    gate = configure(
        gate_model(evaluation=evaluation.outputs["evaluation"], candidate="four_tower", config=gate_config,
                   registry=registry, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER),
        "Gate 4-tower vs baseline and champion",
        cfg,
    )
    with dsl.If(gate.outputs["Output"] == True, name="blessed"):  # noqa: E712 (a KFP condition, not Python)
        index = configure(
            backfill_embeddings(model=four["train"].outputs["model"], data=train_data, milvus_uri=milvus_uri, alias=alias,
                                alias_role="candidate", overrides=index_overrides),
            "Index candidate (verify, candidate alias)",
            cfg,
        )
        control_index = configure(
            backfill_embeddings(model=image_only["train"].outputs["model"], data=train_data, milvus_uri=milvus_uri,
                                alias=alias, alias_role="baseline", overrides=index_overrides,
                                unless_champion=gate.outputs["blessing"]),
            "Index baseline control (first deployment only)",
            cfg,
        )
        configure(
            write_rollout_config(blessing=gate.outputs["blessing"], index=index.outputs["index"],
                                 reference=four["reference"].outputs["reference"],
                                 control_model=image_only["train"].outputs["model"],
                                 control_reference=image_only["reference"].outputs["reference"],
                                 control_index=control_index.outputs["index"], registry=registry, milvus_uri=milvus_uri,
                                 alias=alias, overrides=rollout_overrides, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER),
            "Write release plan (in review)",
            cfg,
        )
    with dsl.Else(name="not-blessed"):
        configure(record_rejection(blessing=gate.outputs["blessing"], run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER),
                  "Record why not blessed", cfg)


def _pipeline(cfg: PipelineConfig, name: str, source: tuple, description: str):
    from kfp import dsl

    from pipelines.wiring import MODEL_PARAMS, notify_on_exit, source_data, with_parameters

    @dsl.pipeline(name=name, description=description)
    @with_parameters(source, MODEL_PARAMS, RELEASE_PARAMS)
    def training_pipeline(**params):
        with notify_on_exit(name, cfg):
            _stages(source_data(params, cfg), cfg, **{key: params[key] for group in (MODEL_PARAMS, RELEASE_PARAMS)
                                                      for key, _, _ in group})

    return training_pipeline


def build(cfg: PipelineConfig):
    """The training pipeline on the generated benchmark (``synth_data`` first)."""
    from pipelines.wiring import SYNTH_PARAMS

    return _pipeline(cfg, NAME, SYNTH_PARAMS, "Generate the benchmark; " + DESCRIPTION[0].lower() + DESCRIPTION[1:])


def build_import(cfg: PipelineConfig):
    """The training pipeline on an existing dataset (``data_uri``: a folder of the data contract)."""
    from pipelines.wiring import IMPORT_PARAMS

    return _pipeline(cfg, IMPORT_NAME, IMPORT_PARAMS, "Import a dataset; " + DESCRIPTION[0].lower() + DESCRIPTION[1:])
