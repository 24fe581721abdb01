"""kfp.local task start: a fresh interpreter per task (kfp.local's way) against a fork of the warm
task server (pipelines.task_server), side by side in one run on the shared machine.

Two measures:

- ``start``: one task that only imports what the torch steps import before any work
  (``vsearch.training.loop``, ``vsearch.evaluation.evaluate``, ``vsearch.monitoring.reference``)
  and returns: the compiled command run cold (``run_local_subprocess``, as kfp.local runs it)
  and warm (``task_server.run_task``), interleaved round by round; the server's first round
  includes learning those imports, so the medians leave round 1 out.
- ``pipeline`` (skip with --no-pipeline): the tiny model pipeline (``run_local("model")``, 9
  tasks) with ``warm=False`` then ``warm=True``: wall seconds and each task's seconds.

    python benchmarks/task_start.py [--rounds 5] [--no-pipeline]

Prints one JSON object (seconds; ``load`` is the 1-minute load average before and after).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEP_IMPORTS = ("vsearch.training.loop", "vsearch.evaluation.evaluate", "vsearch.monitoring.reference")
PROBE = textwrap.dedent('''\
    from typing import List

    from kfp import dsl


    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def start_probe(modules: List[str]) -> int:
        import importlib

        for module in modules:
            importlib.import_module(module)
        return len(modules)
''')


def _probe_command(workdir: Path, n: int) -> list[str]:
    """The command kfp.local runs for one probe task (compiled, python3 replaced)."""
    import importlib.util

    from kfp.local import subprocess_task_handler

    path = workdir / "start_probe.py"
    path.write_text(PROBE)
    spec = importlib.util.spec_from_file_location("start_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = workdir / f"task-{n}"
    out.mkdir()
    executor_input = {"inputs": {"parameterValues": {"modules": list(STEP_IMPORTS)}},
                      "outputs": {"parameters": {"Output": {"outputFile": str(out / "Output")}},
                                  "outputFile": str(out / "executor_output.json")}}
    container = module.start_probe.component_spec.implementation.container
    args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container.args]
    return subprocess_task_handler.replace_python_executable(list(container.command) + args, sys.executable)


def _start(rounds: int) -> dict:
    from kfp.local import subprocess_task_handler

    from pipelines import task_server

    cold, warm = [], []
    with tempfile.TemporaryDirectory() as tmp, task_server.serving(tmp) as path:
        env = {**os.environ, "_KFP_RUNTIME": "true"}
        deadline = time.monotonic() + 120
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        for n in range(rounds):
            command = _probe_command(Path(tmp), 2 * n)
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                assert subprocess_task_handler.run_local_subprocess(command) == 0
            cold.append(time.perf_counter() - t0)
            command = _probe_command(Path(tmp), 2 * n + 1)
            t0 = time.perf_counter()
            code = task_server.run_task(path, task_server.task_request(command), env, lambda line: None)
            warm.append(time.perf_counter() - t0)
            assert code == 0, f"the warm task did not run ({code})"
    cold_m, warm_m = statistics.median(cold[1:] or cold), statistics.median(warm[1:] or warm)
    return {"imports": list(STEP_IMPORTS), "cold_s": [round(s, 2) for s in cold], "warm_s": [round(s, 2) for s in warm],
            "cold_s_median": round(cold_m, 2), "warm_s_median": round(warm_m, 2),
            "cold_over_warm_ratio": round(cold_m / warm_m, 1)}


_STARTED = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) - INFO - Executing task '([^']+)'")
_FINISHED = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) - INFO - Task '([^']+)' finished")


def _task_seconds(log: Path) -> dict[str, float]:
    """Each task's seconds from kfp.local's own "Executing task" / "finished" lines."""
    started, seconds = {}, {}
    for line in re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace")).splitlines():
        for pattern, record in ((_STARTED, started), (_FINISHED, seconds)):
            if match := pattern.match(line):
                h, m, s, task = match.groups()
                record[task] = int(h) * 3600 + int(m) * 60 + float(s)
    return {task: round(seconds[task] - started[task], 1) for task in sorted(seconds) if task in started}


def _pipeline() -> dict:
    from pipelines.config import load_pipeline_config
    from pipelines.local import TINY_PARAMS, run_local

    result = {}
    for label, warm in (("cold", False), ("warm", True)):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                manifest = run_local("model", load_pipeline_config(None, ["retry.num_retries=0"]), tmp,
                                     {**TINY_PARAMS["model"], "seed": 1}, warm=warm)
            result[f"{label}_s"] = round(time.perf_counter() - t0, 1)
            result[f"{label}_tasks_s"] = _task_seconds(Path(manifest["log"]))
    result["cold_over_warm_ratio"] = round(result["cold_s"] / result["warm_s"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-pipeline", action="store_true", help="only the start measure")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    report = {"cpus": os.cpu_count(), "load_before": round(os.getloadavg()[0], 2)}
    report["start"] = _start(args.rounds)
    if not args.no_pipeline:
        report["pipeline"] = _pipeline()
    report["load_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
