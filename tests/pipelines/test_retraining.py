"""Issue 21 item 4: scheduled retraining retrains, and a due retraining starts one.

- The import pipelines fingerprint the dataset in an uncached first step and the importer
  carries the fingerprint as metadata. KFP's importer reuses an artifact only when URI *and*
  every metadata value match (launcher ``matchedArtifactOrNot``), and every later step's cache
  key names its input artifacts: a changed ``.../latest`` is a new artifact (validate, train,
  evaluate run again), unchanged data keeps the cache.
- The monitoring pipeline ends in ``trigger_retraining``: off by default; with a retraining
  schedule named, a due retraining starts one run of that recurring run (same version and
  parameters), tested through the real kfp.Client against the fake KFP server.
"""

import json
import sys
from pathlib import Path

import pytest
from fake_kfp import FakeKFP
from kfp.dsl import Markdown

from components.fingerprint_data import fingerprint_data
from components.trigger_retraining import trigger_retraining
from pipelines.cli import main
from pipelines.compiler import load_documents
from vsearch.monitoring.retrain import decide_retraining
from vsearch.schema import DataError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # the registry tests' real blessings
from test_registry import bless, make_model_dir  # noqa: E402


@pytest.fixture(scope="module")
def compiled(default_package):
    """The default-config packages (tests/conftest.py: compiled once per session, what the goldens hold)."""
    return {name: load_documents(default_package(name))[0] for name in ("training-import", "model-import", "monitoring")}


def _all_tasks(spec: dict) -> dict[str, dict]:
    """Every task of every DAG (root, exit handler, conditions), by name."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


@pytest.mark.parametrize("name,first_consumers", [("training-import", {"validate-data"}),
                                                 ("model-import", {"train-model", "train-model-2"})])
def test_import_pipelines_put_an_uncached_content_fingerprint_into_the_imported_artifact(compiled, name, first_consumers):
    spec = compiled[name]
    tasks = _all_tasks(spec)
    fingerprint = tasks["fingerprint-data"]
    assert not fingerprint["cachingOptions"].get("enableCache")  # it must look at the data every run
    # (inside the exit handler's sub-DAG the pipeline input is passed on as pipelinechannel--data_uri)
    assert fingerprint["inputs"]["parameters"]["data_uri"]["componentInputParameter"].endswith("data_uri")
    importer = tasks["importer"]
    assert importer["inputs"]["parameters"]["uri"]["componentInputParameter"].endswith("data_uri")
    assert importer["inputs"]["parameters"]["metadata"] == {
        "taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "fingerprint-data"}}
    executor = spec["deploymentSpec"]["executors"][spec["components"][importer["componentRef"]["name"]]["executorLabel"]]
    assert executor["importer"]["metadata"] == {"fingerprint": "{{$.inputs.parameters['metadata']}}"}
    consumers = {n for n, t in tasks.items()
                 if any(a.get("taskOutputArtifact", {}).get("producerTask") == "importer"
                        for a in t.get("inputs", {}).get("artifacts", {}).values())}
    assert first_consumers <= consumers


def _dataset(folder, interactions=b"clicks v1"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "catalog.parquet").write_bytes(b"catalog")
    (folder / "interactions.parquet").write_bytes(interactions)
    (folder / "images").mkdir(exist_ok=True)
    return folder


def test_the_fingerprint_follows_the_content_at_one_uri(tmp_path):
    latest = _dataset(tmp_path / "latest")
    first = fingerprint_data.python_func(data_uri=str(latest))
    assert len(first) == 16
    assert fingerprint_data.python_func(data_uri=latest.as_uri()) == first  # a file:// URI reads the same
    assert fingerprint_data.python_func(data_uri=str(_dataset(tmp_path / "copy"))) == first  # content, not location
    _dataset(latest, interactions=b"clicks v2")  # next week's export, same URI
    assert fingerprint_data.python_func(data_uri=str(latest)) != first
    with pytest.raises(DataError, match="not found"):
        fingerprint_data.python_func(data_uri=str(tmp_path / "absent"))


def test_retraining_starts_only_when_due_and_configured():
    assert decide_retraining(True, "vsearch-training-weekly").start
    assert not decide_retraining(False, "vsearch-training-weekly").start
    off = decide_retraining(True, "")
    assert not off.start and "off" in off.reason


def test_monitoring_pipeline_ends_in_an_uncached_retraining_trigger_off_by_default(compiled):
    spec = compiled["monitoring"]
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert inputs["retrain_schedule"]["defaultValue"] == ""  # off unless configured
    task = _all_tasks(spec)["trigger-retraining"]
    assert not task["cachingOptions"].get("enableCache")
    params = task["inputs"]["parameters"]
    assert params["retraining_due"] == {"taskOutputParameter": {"outputParameterKey": "Output",
                                                                "producerTask": "detect-drift"}}
    assert params["schedule"]["componentInputParameter"].endswith("retrain_schedule")
    assert params["monitoring_run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}


@pytest.fixture()
def kfp_server(monkeypatch, tmp_path):
    for var in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "VSEARCH_KFP_COOKIE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VSEARCH_KFP_TOKEN", "t0k3n")
    server = FakeKFP().start()
    yield server
    server.stop()


def _trigger(tmp_path, server, due, schedule):
    decision = Markdown(name="decision", uri=str(tmp_path / f"decision-{due}-{schedule}.md"), metadata={})
    run_id = trigger_retraining.python_func(decision=decision, retraining_due=due, schedule=schedule,
                                            experiment="vsearch", kfp_host=server.url, monitoring_run_id="mon-1")
    return run_id, decision


def test_a_due_retraining_starts_one_run_of_the_retraining_schedule(kfp_server, tmp_path, capsys):
    assert main(["schedule", "model-import", "--host", kfp_server.url, "--experiment", "vsearch", "--cron", "0 0 3 * * 1",
                 "--schedule-name", "vsearch-training-weekly", "--param", "data_uri=s3://vsearch-data/latest",
                 "--service-account", "pipeline-runner"]) == 0
    scheduled = json.loads(capsys.readouterr().out)

    for due, schedule in ((False, "vsearch-training-weekly"), (True, "")):  # not due / not configured: no request
        n = len(kfp_server.requests)
        run_id, decision = _trigger(tmp_path, kfp_server, due, schedule)
        assert run_id == "" and kfp_server.requests[n:] == [] and decision.metadata["start"] is False
        assert decision.metadata["reason"] in open(decision.path).read()

    n = len(kfp_server.requests)
    run_id, decision = _trigger(tmp_path, kfp_server, True, "vsearch-training-weekly")
    posts = [r for r in kfp_server.requests[n:] if r.method != "GET"]
    assert [r.route for r in posts] == ["POST /runs"]
    assert all(r.headers.get("authorization") == "Bearer t0k3n" for r in kfp_server.requests[n:])
    body = posts[0].body
    assert body["pipeline_version_reference"] == {"pipeline_id": scheduled["pipeline_id"],
                                                  "pipeline_version_id": scheduled["version_id"]}
    assert body["runtime_config"]["parameters"] == {"data_uri": "s3://vsearch-data/latest"}
    assert body["service_account"] == "pipeline-runner" and body["experiment_id"] == scheduled["experiment_id"]
    assert "mon-1" in body["display_name"]
    assert run_id in kfp_server.runs and decision.metadata == {"start": True, "reason": decision.metadata["reason"],
                                                               "run_id": run_id}
    assert list(kfp_server.recurring_runs) == [scheduled["recurring_run_id"]]  # the schedule itself is untouched

    with pytest.raises(Exception, match="no recurring run named 'absent'"):
        _trigger(tmp_path, kfp_server, True, "absent")


def test_the_monitoring_schedule_follows_the_registry_champion(kfp_server, tmp_path, capsys, default_package):
    """``--champion-from``: the monitor's model_uri/reference_uri are the champion entry's, read when the
    schedule is asserted, so the daily re-assertion follows a promote and a rollback (before, the CronJob
    passed fixed ConfigMap paths that nothing wrote)."""
    from vsearch.cli import main as vsearch_main
    from vsearch.registry import Registry

    store = str(tmp_path / "registry")
    schedule = ["schedule", "--package", str(default_package("monitoring")), "--host", kfp_server.url, "--cron",
                "0 0 6 * * *", "--schedule-name", "vsearch-monitoring-daily", "--champion-from", store,
                "--param", "data_uri=s3://vsearch-data/recent"]

    def assert_schedule(model, reference):
        assert main(schedule) == 0
        out = json.loads(capsys.readouterr().out)
        (run,) = kfp_server.recurring_runs.values()  # a changed champion replaces the schedule, never adds one
        assert run["recurring_run_id"] == out["recurring_run_id"]
        assert run["runtime_config"]["parameters"] == {"model_uri": str(model), "reference_uri": str(reference),
                                                       "data_uri": "s3://vsearch-data/recent"}
        return out

    # No champion yet: one line, exit 2, nothing scheduled.
    assert vsearch_main(["pipeline", *schedule]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "has no champion yet" in err and store in err
    assert kfp_server.recurring_runs == {}

    reg = Registry(store)
    m1, m2 = make_model_dir(tmp_path / "m1", 1), make_model_dir(tmp_path / "m2", 2)
    reg.promote(bless(tmp_path, "first", m1), drift_reference="s3://refs/m1")
    first = assert_schedule(m1, "s3://refs/m1")
    reg.promote(bless(tmp_path, "second", m2, champion_dir=m1), drift_reference="s3://refs/m2")
    second = assert_schedule(m2, "s3://refs/m2")
    assert second["deleted_recurring_run_ids"] == [first["recurring_run_id"]]
    reg.rollback(reason="guardrail")
    assert_schedule(m1, "s3://refs/m1")

    # Given twice (flag and --param): refused before any request.
    n = len(kfp_server.requests)
    assert vsearch_main(["pipeline", *schedule, "--param", "model_uri=s3://elsewhere"]) == 2
    assert "--champion-from sets it" in capsys.readouterr().err and kfp_server.requests[n:] == []


def test_a_champion_without_a_drift_reference_is_refused(tmp_path, capsys):
    from vsearch.cli import main as vsearch_main
    from vsearch.registry import Registry

    store = str(tmp_path / "registry")
    Registry(store).promote(bless(tmp_path, "first", make_model_dir(tmp_path / "m1", 1)))
    code = vsearch_main(["pipeline", "schedule", "monitoring", "--host", "http://127.0.0.1:9", "--cron", "0 0 6 * * *",
                         "--champion-from", store])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "records no drift_reference" in err


@pytest.mark.parametrize("store", ["nosuch://bucket/registry", "s3://vsearch-no-credentials/registry"])
def test_a_registry_that_cannot_be_read_is_one_line(store, monkeypatch, capsys):
    """A mistyped scheme or a store without credentials: one line naming the registry, exit 2, no request
    (was a botocore traceback, exit 1)."""
    from vsearch.cli import main as vsearch_main

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code = vsearch_main(["pipeline", "schedule", "monitoring", "--host", "http://127.0.0.1:9", "--cron", "0 0 6 * * *",
                         "--champion-from", store])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and f"--champion-from {store}: cannot read the registry" in err
