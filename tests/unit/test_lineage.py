"""Lineage: the code version (env > git > package) and the KFP run id in every durable record
the training pipeline writes: blessing, gate page, rollout plan, rejection, registry champion."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from kfp import dsl
from test_registry import bless, make_model_dir  # tests/unit is on sys.path

from vsearch import __version__
from vsearch.blessing import read_blessing, write_blessing
from vsearch.evaluation import gate as G
from vsearch.evaluation import gate_rule as R
from vsearch.lineage import CODE_VERSION_ENV, code_version
from vsearch.registry import Registry
from vsearch.rollout.schema import load_rollout
from vsearch.rollout.writer import write_rollout

RUN = "3f2a-run-uuid"
# The steps that write durable records: the uncached gate and the two after it (their input, the
# gate's blessing, is new every run). A run id in a cached step's inputs would end its caching.
RUN_ID_STEPS = {"gate-model", "write-rollout-config", "record-rejection"}


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   check=True, capture_output=True)


def test_code_version_prefers_env_then_git_then_package(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-q", "-m", "one")
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()

    assert code_version({CODE_VERSION_ENV: "abc123"}, source=repo) == "abc123"
    # An image built without a revision says "unknown": that is no answer, git is asked.
    assert code_version({CODE_VERSION_ENV: "unknown"}, source=repo) == sha
    assert code_version({}, source=repo) == sha
    (repo / "untracked.txt").write_text("not code\n")
    assert code_version({}, source=repo) == sha
    (repo / "a.py").write_text("x = 2\n")
    assert code_version({}, source=repo) == sha + "-dirty"
    outside = tmp_path / "not-a-checkout"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert code_version({}, source=outside) == f"vsearch {__version__}"
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no git at all: never fails
    assert code_version({}, source=repo) == f"vsearch {__version__}"
    monkeypatch.setenv(CODE_VERSION_ENV, "from-image")
    assert code_version() == "from-image"


def _tasks(component: dict, spec: dict, found: dict) -> dict:
    """Every task of a DAG, nested DAGs (ExitHandler, If/Else) included: {task: its inputs}."""
    for name, task in component.get("dag", {}).get("tasks", {}).items():
        found[name] = task.get("inputs", {}).get("parameters", {})
        _tasks(spec["components"].get(task["componentRef"]["name"], {}), spec, found)
    return found


@pytest.mark.parametrize("name", ["training", "training-import"])
def test_the_compiled_pipeline_passes_the_run_id_only_to_the_uncached_record_writers(default_package, name):
    spec = next(yaml.safe_load_all(default_package(name).read_text()))
    tasks = _tasks(spec["root"], spec, {})
    with_run_id = {task for task, params in tasks.items()
                   if any(p.get("runtimeValue", {}).get("constant") == dsl.PIPELINE_JOB_ID_PLACEHOLDER for p in params.values())}
    assert with_run_id == RUN_ID_STEPS
    assert all(tasks[task]["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}" for task in RUN_ID_STEPS)


def test_gate_lineage_round_trips_and_reaches_page_plan_and_champion(tmp_path, monkeypatch):
    monkeypatch.setenv(CODE_VERSION_ENV, "deadbeef")
    champ, cand = make_model_dir(tmp_path / "champ", 1), make_model_dir(tmp_path / "cand", 2, towers=4)
    registry = Registry(tmp_path / "registry")
    registry.promote(bless(tmp_path, "champ", champ))
    ev = json.loads(bless(tmp_path, "cand", cand, champion_dir=champ).read_text())["data"]["evaluation"]
    out = tmp_path / "gate"
    G.run_gate(ev, out, R.GateConfig(checks=(R.Check("recall@1", "baseline", min_improvement=0.0),), n_boot=100),
               candidate_name="cand", champion=ev, champion_name="champion", run_id=RUN)

    blessing = read_blessing(out)
    assert blessing.lineage == {"code_version": "deadbeef", "run_id": RUN}
    page = (out / G.GATE_REPORT_FILE).read_text()
    assert "deadbeef" in page and RUN in page

    monkeypatch.setenv(CODE_VERSION_ENV, "cafe01")  # the plan names the code that wrote it
    plan = load_rollout(write_rollout(out, tmp_path / "rollout", run_id=RUN)["rollout"])
    assert (plan.lineage.code_version, plan.lineage.run_id) == ("cafe01", RUN)
    assert read_blessing(tmp_path / "rollout").lineage["run_id"] == RUN  # the plan's own blessing copy

    record = registry.promote(out)
    assert record["champion"]["lineage"] == {"code_version": "deadbeef", "run_id": RUN}


def test_a_blessing_from_before_lineage_still_reads_and_promotes(tmp_path):
    cand = make_model_dir(tmp_path / "cand", 2)
    path = bless(tmp_path, "cand", cand)
    old = json.loads(path.read_text())
    old.pop("lineage")
    path.write_text(json.dumps(old))
    blessing = read_blessing(path)
    assert blessing.lineage == {}
    write_blessing(blessing, tmp_path / "again")
    assert Registry(tmp_path / "registry").promote(tmp_path / "again")["champion"]["lineage"] == {}


def test_the_rejection_record_names_the_run_and_the_code(tmp_path, monkeypatch):
    from kfp.dsl import Artifact, Markdown

    from components.record_rejection import record_rejection

    monkeypatch.setenv(CODE_VERSION_ENV, "deadbeef")
    path = bless(tmp_path, "cand", make_model_dir(tmp_path / "cand", 2), good=False)
    rejection = Markdown(name="rejection", uri=str(tmp_path / "rejection.md"), metadata={})
    record_rejection.python_func(blessing=Artifact(name="b", uri=str(path.parent), metadata={}), rejection=rejection,
                                 run_id=RUN)
    text = (tmp_path / "rejection.md").read_text()
    assert f"run `{RUN}`, code `deadbeef`" in text
    assert rejection.metadata["lineage"] == {"code_version": "deadbeef", "run_id": RUN}
