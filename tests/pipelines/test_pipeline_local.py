"""The compiled model pipeline runs end to end under kfp.local on the tiny preset.

kfp.local can report SUCCESS while silently skipping tasks (NOTES.md), so the test checks
that every task ran and left its artifacts, not only the exit status.
"""

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from pipelines.cli import main
from pipelines.compiler import load_documents
from pipelines.local import PACKAGE_FILE, RUN_FILE, required_tasks, run_package
from vsearch.config import ConfigError

EXPECTED = {
    "synth-data": "Generate street-to-shop benchmark",
    "train-model": "Train image-only baseline",
    "train-model-2": "Train 3-tower",
    "train-model-3": "Train 4-tower (from 3-tower)",
    "build-drift-reference": "Build drift reference (image-only baseline)",
    "build-drift-reference-2": "Build drift reference (3-tower)",
    "build-drift-reference-3": "Build drift reference (4-tower)",
    "evaluate-model": "Evaluate models",
    "notify-run": "Record run status (notify on failure)",  # the ExitHandler's step
}


def _uri(manifest, task, output):
    return Path(manifest["tasks"][task]["outputs"][output][0]["uri"])


# A whole pipeline (9 kfp.local tasks, each a fresh interpreter: ~7-12 s apiece loaded, 110-120 s
# in all): past the 300 s default guard on a machine shared with other runs.
@pytest.mark.timeout(900)
@pytest.mark.slow
@pytest.mark.integration
def test_run_local_runs_every_task_of_the_compiled_model_pipeline(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run-local", "model", "--out", str(out), "--tiny", "--param", "seed=1"]) == 0
    assert "run folder:" in capsys.readouterr().out
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert run_dir.name.startswith("vsearch-model-")
    manifest = json.loads((run_dir / RUN_FILE).read_text())
    assert manifest["required_tasks"] == EXPECTED
    assert set(manifest["tasks"]) == set(EXPECTED)
    assert all(manifest["tasks"][t]["display_name"] == name for t, name in EXPECTED.items())
    assert manifest["params"]["seed"] == 1 and manifest["params"]["preset"] == "tiny"

    data = _uri(manifest, "synth-data", "data")
    assert (data / "catalog.parquet").is_file() and (data / "interactions.parquet").is_file()
    towers = {}
    for task in ("train-model", "train-model-2", "train-model-3"):
        model = _uri(manifest, task, "model")
        with safe_open(str(model / "model.safetensors"), "pt") as fh:
            assert len(list(fh.keys())) > 0
        summary = json.loads((model / "train_summary.json").read_text())
        assert summary["steps"] == 3 and Path(summary["data"]) == data.resolve()
        towers[task] = manifest["tasks"][task]["outputs"]["model"][0]["metadata"]["towers"]
        assert manifest["tasks"][task]["outputs"]["metrics"][0]["metadata"]["steps"] == 3.0
    assert [len(towers[t]) for t in ("train-model", "train-model-2", "train-model-3")] == [2, 3, 4]
    for n, task in enumerate(("train-model", "train-model-2", "train-model-3")):  # each model's own reference
        reference = _uri(manifest, "build-drift-reference" + (f"-{n + 1}" if n else ""), "reference")
        snapshot = json.loads((reference / "snapshot.json").read_text())
        assert snapshot["model_dir"] == str(_uri(manifest, task, "model").resolve()) and snapshot["data"] == str(data.resolve())
    four = json.loads((_uri(manifest, "train-model-3", "model") / "train_summary.json").read_text())
    assert four["init"] == str(_uri(manifest, "train-model-2", "model"))

    evaluation = _uri(manifest, "evaluate-model", "evaluation")
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert set(metrics["models"]) == {"image_only", "three_tower", "four_tower"}
    assert metrics["eval"]["model_uris"]["four_tower"] == str(_uri(manifest, "train-model-3", "model").resolve())
    logged = manifest["tasks"]["evaluate-model"]["outputs"]["metrics"][0]["metadata"]
    assert logged["four_tower.recall@1"] == pytest.approx(metrics["models"]["four_tower"]["recall@1"], abs=1e-6)
    assert _uri(manifest, "evaluate-model", "report").read_text().startswith("<!")
    assert "| four_tower |" in _uri(manifest, "evaluate-model", "summary").read_text()
    # The package that ran is kept: the one `compile` writes, less the retries (off locally) and
    # the accelerators (kfp.local gives a task none, and a GPU step without CUDA stops at once).
    expected = tmp_path / "expected"
    assert main(["compile", "--out", str(expected), "--name", "model", "--set", "retry.num_retries=0",
                 "--set", "gpu.enabled=false"]) == 0
    assert load_documents(run_dir / PACKAGE_FILE) == load_documents(expected / "model.yaml")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no compile leftovers


def test_required_tasks_leave_out_conditional_and_loop_branches():
    spec = {
        "components": {
            "comp-a": {"executorLabel": "exec-a"},
            "comp-sub": {"dag": {"tasks": {"inner": {"componentRef": {"name": "comp-a"}, "taskInfo": {"name": "Inner"}}}}},
        },
        "root": {"dag": {"tasks": {
            "a": {"componentRef": {"name": "comp-a"}, "taskInfo": {"name": "A"}},
            "sub": {"componentRef": {"name": "comp-sub"}, "taskInfo": {"name": "sub"}},
            "if": {"componentRef": {"name": "comp-sub"}, "triggerPolicy": {"condition": "x == 'y'"}},
            "loop": {"componentRef": {"name": "comp-sub"}, "parameterIterator": {"itemInput": "i"}},
        }}},
    }
    assert required_tasks(spec) == {"a": "A", "inner": "Inner"}


def _branching_package(tmp_path, named_tuple: bool):
    from kfp import compiler, dsl
    from probe_components import decide, decide_with_reason, record

    @dsl.pipeline(name="probe-branches")
    def probe(bless: bool = True):
        if named_tuple:
            decision = decide_with_reason(bless=bless).outputs["blessed"]
            with dsl.If(decision == True):  # noqa: E712 (a KFP condition, not Python)
                record(message="blessed").set_display_name("Record blessing")
        else:
            decision = decide(bless=bless).output
            with dsl.If(decision == True):  # noqa: E712
                record(message="blessed").set_display_name("Record blessing")
            with dsl.Else():
                record(message="not blessed").set_display_name("Record why not")

    package = tmp_path / "probe.yaml"
    compiler.Compiler().compile(probe, str(package))
    return package


def test_expected_branch_tasks_are_checked(tmp_path):
    package = _branching_package(tmp_path, named_tuple=False)
    manifest = run_package(package, tmp_path / "runs", {"bless": True}, expect=["Record blessing"])
    ran = {t["display_name"] for t in manifest["tasks"].values()}
    assert "Record blessing" in ran and "Record why not" not in ran
    with pytest.raises(RuntimeError, match=r"did not run \(Record why not\)"):
        run_package(package, tmp_path / "runs2", {"bless": True}, expect=["Record why not"])
    with pytest.raises(ConfigError, match="no such task"):
        run_package(package, tmp_path / "runs3", {"bless": True}, expect=["Record everything"])


def test_a_silently_skipped_branch_fails_the_run(tmp_path):
    # kfp.local 2.17 skips a dsl.If (without Else) on a NamedTuple field and reports SUCCESS
    # (NOTES.md). If this starts passing, kfp fixed it: update NOTES.md and this test.
    package = _branching_package(tmp_path, named_tuple=True)
    with pytest.raises(RuntimeError, match="reported success but task"):
        run_package(package, tmp_path / "runs", {"bless": True}, expect=["Record blessing"])


def test_a_run_prints_one_line_per_task_and_keeps_the_executor_output_in_its_log(tmp_path, capfd):
    from pipelines.cli import run_summary

    package = _branching_package(tmp_path, named_tuple=False)
    manifest = run_package(package, tmp_path / "runs", {"bless": False}, expect=["Record why not"])
    print(run_summary(manifest))
    captured = capfd.readouterr()
    lines = captured.out.splitlines()
    # One line per task that ran, then the summary; nothing of the executors' own output.
    assert [line.split()[0] for line in lines[:2]] == ["decide", "record-2"]
    assert "SUCCESS" in lines[0] and "Output=false" in lines[0] and "(Record why not)" in lines[1]
    assert lines[2:] == [f"run folder: {manifest['run_dir']} (2 tasks, {manifest['seconds']:.0f} s)",
                         f"executor log: {manifest['log']}"]
    assert "KFP Executor" not in captured.out + captured.err and len(captured.out) < 600
    log = Path(manifest["log"])
    assert log == Path(manifest["run_dir"]) / "executor.log"
    text = log.read_text()
    assert "Got executor_input" in text and "Executing task" in text and "not blessed" in text
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]


def test_a_failed_task_shows_its_last_log_lines_and_the_log_keeps_them_all(tmp_path, capfd):
    from kfp import compiler, dsl
    from probe_components import decide, fail_loudly

    @dsl.pipeline(name="probe-failure")
    def probe():
        fail_loudly(reason="the catalog has a duplicate product id").after(decide(bless=True))

    package = tmp_path / "probe.yaml"
    compiler.Compiler().compile(probe, str(package))
    with pytest.raises(RuntimeError) as failed:
        run_package(package, tmp_path / "runs")
    message = str(failed.value)
    # The error (what `run-local` and `demo` print) names the task, carries the end of its log
    # (the traceback and the last lines before it) and says where the whole log is.
    assert "Inner task failed: 'fail-loudly'" in message
    assert "ValueError: the catalog has a duplicate product id" in message
    assert "progress marker 049" in message and "progress marker 020" not in message
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert f"The full log: {run_dir / 'executor.log'}" in message
    assert "progress marker 000" in (run_dir / "executor.log").read_text()
    out = capfd.readouterr().out
    assert [line.split()[:2] for line in out.splitlines()] == [["decide", "SUCCESS"], ["fail-loudly", "FAILURE"]]
