"""``make demo`` through Kubeflow Pipelines: the compiled training pipeline run by kfp.local.

``run_pipeline_demo(out)`` compiles every pipeline (the very YAML a cluster gets, kept in
``<out>/pipelines/``), runs the training pipeline with ``kfp.local.SubprocessRunner`` on the
embedded defaults (generated benchmark, Feast local, Milvus Lite at ``<out>/milvus.db``),
checks that the branch the gate chose really ran, then runs the monitoring pipeline on a
shifted window with the trained 4-tower model and its drift reference (the training
pipeline's ``build_drift_reference`` output), and gathers the reviewer-facing files:

    <out>/metrics.json      the metrics contract {"models": {...}, "eval": {...}}
    <out>/report.html       evaluation report (CIs, Recall@K curves, retrieval examples)
    <out>/blessing.json     the gate's decision, every check, the reason (+ gate.html)
    <out>/rollout.yaml      the release plan when blessed: both A/B arms, ramp, guardrails
                            (+ inferenceservice.yaml, one InferenceService per arm); the release
                            waits in review: `vsearch release status --rollout <out>/rollout.yaml`
    <out>/rejection.md      or why the candidate was not shipped
    <out>/milvus.db         Milvus Lite: the candidate's collection under <alias>_candidate (and, on
                            a first deployment, the baseline's under <alias>_baseline); the live
                            alias is not moved: only `vsearch release promote` moves it
    <out>/registry/         the champion registry and the release's event log
    <out>/drift/            drift report (drift.json, index.html) of the shifted window
    <out>/pipelines/*.yaml  compiled pipelines (submit them with `vsearch pipeline submit`)
    <out>/kfp/              kfp.local run folders: every task's artifacts, run.json and
                            executor.log (everything the tasks printed; the console gets one
                            line per task)
    <out>/pipeline_demo.json  what ran, where, how long
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ALIAS = "vsearch_serving"
BLESSED_TASKS = ("backfill-embeddings", "backfill-embeddings-2", "write-rollout-config")
REJECTED_TASKS = ("record-rejection",)


def _log(message: str) -> None:
    print(f"[pipeline demo {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _copy(src: Path, dst: Path) -> None:
    """Copy a file or folder into place atomically (a previous one is replaced only when complete)."""
    from vsearch import artifacts

    if src.is_dir():
        with artifacts.staged(dst) as staging:
            shutil.copytree(src, staging, dirs_exist_ok=True)
    else:
        with artifacts.staged_file(dst) as tmp:
            shutil.copyfile(src, tmp)


def _output(manifest: dict, task: str, output: str) -> Path:
    return Path(manifest["tasks"][task]["outputs"][output][0]["uri"])


def run_pipeline_demo(out: str | os.PathLike, preset: str = "default", seed: int = 0, *,
                      params: dict | None = None, monitoring: bool = True, precision: str | None = None) -> dict:
    """Run the training pipeline (and the monitoring pipeline) locally; returns the summary.

    Args:
        out: run folder (created; files listed in the module docstring).
        preset: benchmark preset (tiny, default, holdout).
        seed: seed of the generated benchmark.
        params: extra training-pipeline parameters (e.g. ``pipelines.local.TINY_PARAMS["training"]``).
        monitoring: also run the monitoring pipeline on a shifted window.
        precision: ``train.precision`` of every training task (None: each preset's own, ``auto``).

    Raises:
        RuntimeError: a task failed, or the branch the gate chose did not run.
    """
    from pipelines.compiler import compile_all
    from pipelines.config import load_pipeline_config
    from pipelines.local import run_local

    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # The cluster YAMLs, kept as they would be submitted.
    compiled = compile_all(load_pipeline_config(), out / "pipelines")
    _log(f"compiled {len(compiled)} pipelines -> {out / 'pipelines'}")
    # Locally: no retries (a local failure is a bug or bad input; kfp.local would replay it with backoff).
    cfg = load_pipeline_config(None, ["retry.num_retries=0"])
    run_params = {"preset": preset, "seed": seed, "milvus_uri": str(out / "milvus.db"), "alias": ALIAS,
                  "registry": str(out / "registry"), **(params or {})}
    if precision:
        run_params["train_overrides"] = [*run_params.get("train_overrides", []), f"train.precision={precision}"]
        _log(f"training precision: {precision}" + (" (autocast; the loss stays float32; channels_last image towers)"
                                                     if precision == "bf16" else ""))
    _log(f"training pipeline: preset {preset}, seed {seed} (kfp.local SubprocessRunner)")
    training = run_local("training", cfg, out / "kfp", run_params)
    blessing_dir = _output(training, "gate-model", "blessing")
    blessing = json.loads((blessing_dir / "blessing.json").read_text())
    ran = set(training["tasks"])
    expected, skipped = (BLESSED_TASKS, REJECTED_TASKS) if blessing["blessed"] else (REJECTED_TASKS, BLESSED_TASKS)
    if not set(expected) <= ran or set(skipped) & ran:
        raise RuntimeError(f"{training['run_dir']}: the gate decided blessed={blessing['blessed']} but the tasks that ran "
                           f"were {sorted(ran)} (expected {list(expected)}, not {list(skipped)})")
    evaluation = _output(training, "evaluate-model", "evaluation")
    _copy(evaluation / "metrics.json", out / "metrics.json")
    _copy(evaluation / "report.html", out / "report.html")
    _copy(blessing_dir / "blessing.json", out / "blessing.json")
    _copy(blessing_dir / "report.html", out / "gate.html")
    summary: dict = {"run_dir": training["run_dir"], "blessed": blessing["blessed"], "reason": blessing["reason"],
                     "candidate": blessing["candidate"]["version"], "training_seconds": training["seconds"],
                     "precision": precision or "auto",
                     "logs": [training["log"]], "pipelines": [str(p) for p in compiled]}
    for stale in ("rollout.yaml", "inferenceservice.yaml", "rejection.md"):
        (out / stale).unlink(missing_ok=True)  # from an earlier run with the other decision
    if blessing["blessed"]:
        from vsearch.indexing.store import candidate_alias

        rollout = _output(training, "write-rollout-config", "rollout")
        _copy(rollout / "rollout.yaml", out / "rollout.yaml")
        _copy(rollout / "inferenceservice.yaml", out / "inferenceservice.yaml")
        alias = run_params["alias"]
        summary["collection"] = training["tasks"]["backfill-embeddings"]["parameters"]["Output"]
        summary["milvus"] = {"uri": run_params["milvus_uri"], "alias": candidate_alias(alias), "collection": summary["collection"],
                             "live_alias": alias}
        summary["data"] = str(_output(training, "build-training-set", "training_set"))
        summary["release"] = {"status": "in_review", "plan": str(out / "rollout.yaml"), "registry": run_params["registry"]}
        _log(f"BLESSED: candidate {summary['collection']} indexed under {candidate_alias(alias)}; the live alias {alias} "
             "is untouched; the release waits in review")
    else:
        _copy(_output(training, "record-rejection", "rejection"), out / "rejection.md")
        _log(f"NOT BLESSED: {blessing['reason']}")

    if monitoring:
        from vsearch.monitoring.simulate import shifted_copy

        data = _output(training, "synth-data", "data")
        window = out / "windows" / "shifted"
        shifted_copy(data, window)
        # The 4-tower model and its drift reference (the third train_model and build_drift_reference tasks).
        model, reference = _output(training, "train-model-3", "model"), _output(training, "build-drift-reference-3", "reference")
        _log("monitoring pipeline: 4-tower reference vs a shifted window (new category mix, colour shift, longer titles)")
        monitor = run_local("monitoring", cfg, out / "kfp", {"model_uri": str(model), "reference_uri": str(reference),
                                                             "data_uri": str(window)})
        _copy(_output(monitor, "detect-drift", "drift_report"), out / "drift")
        summary["monitoring"] = {"run_dir": monitor["run_dir"], "retraining_due": monitor["outputs"].get("Output"),
                                 "seconds": monitor["seconds"]}
        summary["logs"].append(monitor["log"])
        _log(f"drift on the shifted window: retraining due = {summary['monitoring']['retraining_due']}")
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    (out / "pipeline_demo.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_summary(out: Path, summary: dict) -> str:
    """Where the results are: the report, the gate's verdict, the summary and the executor logs."""
    verdict = "BLESSED" if summary["blessed"] else "NOT BLESSED"
    lines = [f"{verdict}: {summary['reason']}",
             f"report:        {out / 'report.html'}",
             f"gate:          {out / 'gate.html'}"]
    if "monitoring" in summary:
        lines.append(f"drift:         {out / 'drift' / 'index.html'} (retraining due: {summary['monitoring']['retraining_due']})")
    lines += [f"summary:       {out / 'pipeline_demo.json'} ({summary['total_seconds']:.0f} s)",
              f"executor logs: {', '.join(summary['logs'])}"]
    return "\n".join(lines)


def next_steps(out: Path, summary: dict) -> str:
    """What a reviewer runs next (printed at the end of the demo)."""
    if not summary.get("blessed"):
        return f"Not blessed: read {out / 'rejection.md'} and {out / 'gate.html'}."
    plan, data = out / "rollout.yaml", summary["data"]
    return "\n".join([
        "The candidate is indexed and waits in review; nothing live has moved. Next:",
        f"  1. read the report and the gate's verdict: {out / 'report.html'}  {out / 'gate.html'}",
        f"  2. serve both A/B arms:                   vsearch serve --rollout {plan} --data {data}",
        f"  3. approve (starts the A/B at step 1):    vsearch release approve --rollout {plan}",
        f"  4. analyze the evidence:                  vsearch rollout analyze --rollout {plan} --out {out / 'analysis'}",
        f"  5. ramp, then promote (or roll back):     vsearch release ramp|promote --rollout {plan} --analysis {out / 'analysis'}",
        f"  status at any time:                      vsearch release status --rollout {plan}",
    ])


def _precision(choice: str) -> str | None:
    """``--precision`` as a ``train.precision`` override (None: the presets' own ``auto``)."""
    if choice != "fast":
        return None if choice == "auto" else choice
    from vsearch.training.device import fast_bf16

    return "bf16" if fast_bf16() else None


def main(argv: list[str] | None = None) -> int:
    from vsearch.data.synth import add_benchmark_arguments

    parser = argparse.ArgumentParser(prog="vsearch pipeline demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="run folder")
    add_benchmark_arguments(parser)
    parser.add_argument("--tiny", action="store_true", help="tiny configs and a few steps (smoke run)")
    parser.add_argument("--no-monitoring", action="store_true", help="skip the monitoring pipeline")
    parser.add_argument("--precision", choices=("fast", "auto", "fp32", "bf16"), default="fast",
                        help="training precision: fast (default) = bf16 where it is native (GPU, or a CPU with "
                             "avx512_bf16/AMX: training 1.4x faster here, same figures: docs/model-quality.md), else the presets' auto")
    args = parser.parse_args(argv)
    params = None
    if args.tiny:
        from pipelines.local import TINY_PARAMS

        params = {k: v for k, v in TINY_PARAMS["training"].items() if k not in ("preset",)}
        params["gate_config"] = "gate_smoke"  # a few training steps cannot be significant: plumbing only
    try:
        summary = run_pipeline_demo(args.out, args.preset, args.seed, params=params, monitoring=not args.no_monitoring,
                                    precision=_precision(args.precision))
    except RuntimeError as err:
        print(f"vsearch pipeline demo: error: {err}", file=sys.stderr)
        return 1
    from vsearch.evaluation.evaluate import format_table

    out = Path(args.out).absolute()
    print(format_table(json.loads((out / "metrics.json").read_text())))
    print(run_summary(out, summary))
    print(next_steps(out, summary))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
