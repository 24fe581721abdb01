"""The monitoring pipeline: recent data vs the serving model's reference; is retraining due?

    importer(model_uri), importer(data_uri) -> detect_drift -> pipeline output ``retraining_due``

The reference window was saved inside the model folder at training time
(``drift_reference/``); the current window (``data_uri``, optionally cut to
``since``/``until``) is embedded by the same model and compared with Evidently
(embedding drift, feature drift, retrieval-health proxies). The pipeline's output (a bool)
and the drift metrics say whether retraining is due; a recurring run of this pipeline is
the weekly monitor (``vsearch pipeline schedule monitoring --cron ...``).
"""

from typing import List

from pipelines.config import PipelineConfig

NAME = "vsearch-monitoring"


def build(cfg: PipelineConfig):
    from kfp import dsl
    from kfp.dsl import Dataset, Model

    from components.detect_drift import detect_drift
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
        return drift.outputs["Output"]

    return monitoring_pipeline
