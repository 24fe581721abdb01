"""``make demo`` through Kubeflow Pipelines: the compiled training pipeline run by kfp.local.

``run_pipeline_demo(out)`` compiles every pipeline (the very YAML a cluster gets, kept in
``<out>/pipelines/``), runs the training pipeline with ``kfp.local.SubprocessRunner`` on the
embedded defaults (generated benchmark, Feast local, Milvus Lite at ``<out>/milvus.db``),
checks that the branch the gate chose really ran, then runs the monitoring pipeline on a
shifted window with the trained 4-tower model, and gathers the reviewer-facing files:

    <out>/metrics.json      the metrics contract {"models": {...}, "eval": {...}}
    <out>/report.html       evaluation report (CIs, Recall@K curves, retrieval examples)
    <out>/blessing.json     the gate's decision, every check, the reason (+ gate.html)
    <out>/rollout.yaml      A/B rollout config (+ inferenceservice.yaml) when blessed,
    <out>/rejection.md      or why the candidate was not shipped
    <out>/milvus.db         Milvus Lite: the candidate's collection behind the serving alias
    <out>/drift/            drift report (drift.json, index.html) of the shifted window
    <out>/pipelines/*.yaml  compiled pipelines (submit them with `vsearch pipeline submit`)
    <out>/kfp/              kfp.local run folders: every task's artifacts + run.json
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
BLESSED_TASKS = ("backfill-embeddings", "write-rollout-config")
REJECTED_TASKS = ("record-rejection",)


def _log(message: str) -> None:
    print(f"[pipeline demo {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _copy(src: Path, dst: Path) -> None:
    """Copy a file or folder into place atomically (a previous one is replaced only when complete)."""
    from vsearch import artifacts

    if src.is_dir():
        staging = artifacts.fresh_staging(dst)
        shutil.rmtree(staging)
        shutil.copytree(src, staging)
        artifacts.publish(staging, dst)
    else:
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def _output(manifest: dict, task: str, output: str) -> Path:
    return Path(manifest["tasks"][task]["outputs"][output][0]["uri"])


def run_pipeline_demo(out: str | os.PathLike, preset: str = "default", seed: int = 0, *,
                      params: dict | None = None, monitoring: bool = True) -> dict:
    """Run the training pipeline (and the monitoring pipeline) locally; returns the summary.

    Args:
        out: run folder (created; files listed in the module docstring).
        preset: benchmark preset (tiny, default, holdout).
        seed: seed of the generated benchmark.
        params: extra training-pipeline parameters (e.g. ``pipelines.local.TINY_PARAMS["training"]``).
        monitoring: also run the monitoring pipeline on a shifted window.

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
    run_params = {"preset": preset, "seed": seed, "milvus_uri": str(out / "milvus.db"), "alias": ALIAS, **(params or {})}
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
                     "pipelines": [str(p) for p in compiled]}
    for stale in ("rollout.yaml", "inferenceservice.yaml", "rejection.md"):
        (out / stale).unlink(missing_ok=True)  # from an earlier run with the other decision
    if blessing["blessed"]:
        rollout = _output(training, "write-rollout-config", "rollout")
        _copy(rollout / "rollout.yaml", out / "rollout.yaml")
        _copy(rollout / "inferenceservice.yaml", out / "inferenceservice.yaml")
        summary["collection"] = training["tasks"]["backfill-embeddings"]["parameters"]["Output"]
        summary["milvus"] = {"uri": run_params["milvus_uri"], "alias": ALIAS, "collection": summary["collection"]}
        _log(f"BLESSED: {summary['collection']} behind alias {ALIAS} in {run_params['milvus_uri']}; rollout.yaml written")
    else:
        _copy(_output(training, "record-rejection", "rejection"), out / "rejection.md")
        _log(f"NOT BLESSED: {blessing['reason']}")

    if monitoring:
        from vsearch.monitoring.simulate import shifted_copy

        data = _output(training, "synth-data", "data")
        window = out / "windows" / "shifted"
        shifted_copy(data, window)
        model = _output(training, "train-model-3", "model")
        _log("monitoring pipeline: 4-tower reference vs a shifted window (new category mix, colour shift, longer titles)")
        monitor = run_local("monitoring", cfg, out / "kfp", {"model_uri": str(model), "data_uri": str(window)})
        _copy(_output(monitor, "detect-drift", "drift_report"), out / "drift")
        summary["monitoring"] = {"run_dir": monitor["run_dir"], "retraining_due": monitor["outputs"].get("Output"),
                                 "seconds": monitor["seconds"]}
        _log(f"drift on the shifted window: retraining due = {summary['monitoring']['retraining_due']}")
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    (out / "pipeline_demo.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vsearch pipeline demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--preset", default="default", help="benchmark preset (tiny, default, holdout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="tiny configs and a few steps (smoke run)")
    parser.add_argument("--no-monitoring", action="store_true", help="skip the monitoring pipeline")
    args = parser.parse_args(argv)
    params = None
    if args.tiny:
        from pipelines.local import TINY_PARAMS

        params = {k: v for k, v in TINY_PARAMS["training"].items() if k not in ("preset",)}
    try:
        summary = run_pipeline_demo(args.out, args.preset, args.seed, params=params, monitoring=not args.no_monitoring)
    except RuntimeError as err:
        print(f"vsearch pipeline demo: error: {err}", file=sys.stderr)
        return 1
    from vsearch.evaluation.evaluate import format_table

    print(format_table(json.loads((Path(args.out) / "metrics.json").read_text())))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
