"""The monitoring pipeline: recent data vs the serving model's reference; is retraining due?

    importer(model_uri), importer(reference_uri), importer(data_uri)
      -> detect_drift -> pipeline output ``retraining_due``
      -> trigger_retraining (off unless ``retrain_schedule``)

The reference window is the serving model's ``build_drift_reference`` output (built after
its ``train_model`` step in the training pipeline); ``reference_uri`` is its durable URI, as
the release plan's arm (``drift_reference``) and the registry's champion entry record it
(``vsearch registry show``). The current window (``data_uri``, optionally cut to
``since``/``until``) is embedded by the same model and compared with Evidently (embedding
drift, feature drift, retrieval-health proxies); a reference built by another model is
refused. The pipeline's output (a bool) and the drift metrics say whether retraining is due;
a recurring run of this pipeline is the monitor (``vsearch pipeline schedule monitoring
--cron ...``; k8s/base/recurring-run.yaml registers it next to the weekly retraining). With
``retrain_schedule`` naming the recurring retraining run, a due retraining starts one run of
it at once (same pipeline version and parameters); empty (the default), nothing is started
and the step records why.
"""

from typing import List

from pipelines.config import PipelineConfig

NAME = "vsearch-monitoring"


def build(cfg: PipelineConfig):
    from kfp import dsl, kubernetes
    from kfp.dsl import Dataset, Model

    from components.detect_drift import detect_drift
    from components.trigger_retraining import trigger_retraining
    from pipelines.wiring import configure, import_artifact

    @dsl.pipeline(name=NAME, description="Drift of recent queries and catalog vs the serving model's drift reference "
                  "(Evidently); the output says whether retraining is due.")
    def monitoring_pipeline(
        model_uri: str,
        reference_uri: str,
        data_uri: str,
        drift_config: str = "drift",
        drift_overrides: List[str] = [],
        since: str = "",
        until: str = "",
        retrain_schedule: str = "",
        retrain_experiment: str = "vsearch",
        kfp_host: str = "http://ml-pipeline.kubeflow.svc.cluster.local:8888",
        kfp_namespace: str = "",
    ) -> bool:
        model = import_artifact(model_uri, Model, "Import serving model")
        reference = import_artifact(reference_uri, Dataset, "Import its drift reference")
        data = import_artifact(data_uri, Dataset, "Import recent data")
        drift = configure(
            detect_drift(model=model.output, reference=reference.output, current=data.output, config=drift_config,
                         overrides=drift_overrides, since=since, until=until),
            "Detect drift (retraining due?)",
            cfg,
        )
        trigger = configure(
            trigger_retraining(retraining_due=drift.outputs["Output"], schedule=retrain_schedule,
                               experiment=retrain_experiment, kfp_host=kfp_host, kfp_namespace=kfp_namespace,
                               monitoring_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER),
            "Start retraining if due (and configured)",
            cfg,
        )
        # Kubeflow's PodDefault `access-ml-pipeline` mounts the KFP API token into pods so labelled.
        kubernetes.add_pod_label(trigger, label_key="access-ml-pipeline", label_value="true")
        return drift.outputs["Output"]

    return monitoring_pipeline
