"""record_rejection: the Else branch of the gate, recording why the candidate was not shipped."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def record_rejection(blessing: Input[Artifact], rejection: Output[Markdown], run_id: str = "") -> str:
    """Write why the candidate was not blessed, so the run says why nothing was indexed or rolled out.

    Args:
        blessing: The gate's blessing folder (blessing.json with blessed = false).
        run_id: This KFP run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER), recorded with the code version.

    Returns:
        rejection: The reason and every failed check (Markdown).
        Output: The gate's reason, one line.
    """
    from vsearch.blessing import read_blessing
    from vsearch.lineage import lineage
    from vsearch.schema import DataError

    result = read_blessing(blessing.path)
    if result.blessed:
        raise DataError(f"{blessing.path}/blessing.json", "record_rejection called on a blessed candidate")
    failed = [c for c in result.checks if c["status"] == "fail"]
    lines = [f"# Not blessed: {result.candidate.name} ({result.candidate.version})", "",
             result.reason, "", "Not indexed, no rollout config; the serving alias is untouched.", ""]
    recorded, judged = lineage(run_id), result.lineage
    lines += [f"Lineage: recorded by run `{recorded['run_id']}`, code `{recorded['code_version']}`; judged by run "
              f"`{judged.get('run_id')}`, code `{judged.get('code_version')}`.", ""]
    lines += [f"- FAIL {c['name']}: {c['detail']}" for c in failed] or ["- no check failed: no thresholds configured (fails closed)"]
    with open(rejection.path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    rejection.metadata.update({"candidate": result.candidate.version, "failed_checks": len(failed), "lineage": recorded})
    return result.reason
