"""notify_run: the exit step of every scheduled pipeline; records how the run ended, posts a failure."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def notify_run(status: dsl.PipelineTaskFinalStatus, run_status: Output[Artifact], pipeline: str = "",
               notify_on: str = "failure") -> str:
    """Record the run's final status; post it to the webhook of $VSEARCH_NOTIFY_WEBHOOK when configured.

    Runs after the pipeline's body whatever happened (dsl.ExitHandler). Nothing is fetched
    without a configured URL (on a cluster: the optional Secret vsearch-notify).

    Args:
        status: KFP's final status of the body (state, job, failed task, error).
        pipeline: The pipeline's name, for the record and the message.
        notify_on: When to post: failure (any state but SUCCEEDED), always or never.

    Returns:
        run_status: run_status.json: pipeline, state, job, error, when, and what became of the post.
        Output: The final state (SUCCEEDED, FAILED, ...).
    """
    import json
    import sys

    from vsearch.run_status import notify

    final = {"state": status.state, "pipeline_job_resource_name": status.pipeline_job_resource_name,
             "pipeline_task_name": status.pipeline_task_name, "error_code": status.error_code,
             "error_message": status.error_message}
    record = notify(final, pipeline, notify_on)
    with open(run_status.path, "w") as fh:
        json.dump(record, fh, indent=2)
    run_status.metadata.update({"state": record["state"], "webhook": record["webhook"]})
    print(f"notify_run: {pipeline} {record['state']}; webhook {record['webhook']}", file=sys.stderr)
    return record["state"]
