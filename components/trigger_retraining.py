"""trigger_retraining: when drift says retraining is due (and it is configured), start the retraining run now."""

from kfp import dsl
from kfp.dsl import Markdown, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def trigger_retraining(
    decision: Output[Markdown],
    retraining_due: bool,
    schedule: str = "",
    experiment: str = "vsearch",
    kfp_host: str = "",
    kfp_namespace: str = "",
    monitoring_run_id: str = "",
) -> str:
    """Start one run of the recurring retraining run ``schedule`` now if retraining is due (off when empty).

    Args:
        retraining_due: detect_drift's verdict.
        schedule: Recurring run to start early (its version and parameters); "" = off.
        experiment: KFP experiment of that recurring run.
        kfp_host: KFP API endpoint; "" = ``$KF_PIPELINES_ENDPOINT``.
        kfp_namespace: Kubeflow profile namespace (multi-user KFP).
        monitoring_run_id: This monitoring run's id, recorded in the new run's name.

    Returns:
        decision: The decision and its reason; the started run's id (Markdown).
        Output: The id of the run started, "" when none.
    """
    from vsearch.monitoring.retrain import decide_retraining

    verdict = decide_retraining(retraining_due, schedule)
    run_id = ""
    if verdict.start:
        from pipelines import client as kfp_client

        client = kfp_client.connect(kfp_host or None, kfp_namespace or None)
        run_id = kfp_client.run_recurring_now(
            client, schedule, experiment=experiment, namespace=kfp_namespace or None,
            run_name=f"{schedule} (drift, monitoring run {monitoring_run_id or '?'})",
        ).run_id
    with open(decision.path, "w") as fh:
        fh.write(f"**{verdict.reason}**" + (f"\n\nStarted run `{run_id}`.\n" if run_id else "\n"))
    decision.metadata.update({"start": verdict.start, "reason": verdict.reason, "run_id": run_id})
    return run_id
