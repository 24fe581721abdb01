"""The monitoring pipeline: recent data vs the serving model's reference; is retraining due?

    importer(model_uri), importer(data_uri) -> detect_drift -> pipeline output ``retraining_due``
                                                  -> trigger_retraining (off unless ``retrain_schedule``)

The reference window was saved inside the model folder at training time
(``drift_reference/``); the current window (``data_uri``, optionally cut to
``since``/``until``) is embedded by the same model and compared with Evidently
(embedding drift, feature drift, retrieval-health proxies). The pipeline's output (a bool)
and the drift metrics say whether retraining is due; a recurring run of this pipeline is
the monitor (``vsearch pipeline schedule monitoring --cron ...``; k8s/base/recurring-run.yaml
registers it next to the weekly retraining). With ``retrain_schedule`` naming the recurring
retraining run, a due retraining starts one run of it at once (same pipeline version and
parameters); empty (the default), nothing is started and the step records why.
"""

from typing import List

from pipelines.config import PipelineConfig

NAME = "vsearch-monitoring"


def build(cfg: PipelineConfig):
    from kfp import dsl, kubernetes
    from kfp.dsl import Dataset, Model

    from components.detect_drift import detect_drift
    from components.trigger_retraining import trigger_retraining
    from pipelines.wiring import configure

    @dsl.pipeline(name=NAME, description="Drift of recent queries and catalog vs the serving model's training-time "
                  "reference (Evidently); the output says whether retraining is due.")
    def monitoring_pipeline(
        model_uri: str,
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
        model = dsl.importer(artifact_uri=model_uri, artifact_class=Model, reimport=False)
        model.set_display_name("Import serving model")
        data = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=False)
        data.set_display_name("Import recent data")
        drift = configure(
            detect_drift(model=model.output, current=data.output, config=drift_config, overrides=drift_overrides,
                         since=since, until=until),
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
