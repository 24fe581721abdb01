"""Submission and scheduling through the real kfp.Client against a fake v2beta1 KFP server.

The fake (fake_kfp.py) is a real HTTP server on 127.0.0.1 speaking the REST JSON of
kfp_server_api; the tests assert on the exact requests the client sent.
"""

import hashlib
import json

import pytest
import yaml
from fake_kfp import FakeKFP

from components.image import GPU_IMAGE
from pipelines.cli import main
from pipelines.client import validate_cron
from vsearch.cli import main as vsearch_main
from vsearch.config import ConfigError

TOKEN = "t0k3n-for-tests"


@pytest.fixture()
def kfp_server(monkeypatch, tmp_path):
    for var in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME",
                "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.config/kfp/context.json of the machine
    monkeypatch.setenv("VSEARCH_KFP_TOKEN", TOKEN)
    server = FakeKFP().start()
    yield server
    server.stop()


@pytest.fixture()
def model(default_package):
    """``--package <model.yaml>``: the default-config package, compiled once per session. Tests
    that are not about compiling submit it (``submit model`` compiles for 2-5 s each time); the
    NAME path is test_submit_uploads_pipeline_and_version_then_runs_it's (and a --set override's)."""
    return ["--package", str(default_package("model"))]


def _run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


def _filter(req):
    return json.loads(req.query["filter"])["predicates"]


def test_submit_uploads_pipeline_and_version_then_runs_it(kfp_server, capsys, default_package):
    code, out, _ = _run(capsys, ["submit", "model", "--host", kfp_server.url, "--experiment", "weekly",
                                 "--run-name", "first", "--param", "seed=3", "--param", "preset=tiny"])
    assert code == 0
    assert kfp_server.routes(skip_healthz=False) == [
        "GET /healthz",  # kfp.Client probes it with the default namespace
        "GET /experiments",
        "POST /experiments",
        "GET /pipelines",
        "POST /pipelines/upload",
        f"GET /pipelines/{out['pipeline_id']}/versions",
        "POST /pipelines/upload_version",
        "POST /runs",
    ]
    reqs = kfp_server.requests
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in reqs)
    assert _filter(reqs[1]) == [{"operation": 1, "key": "display_name", "stringValue": "weekly"}]
    assert reqs[2].body == {"display_name": "weekly", "namespace": ""}
    assert _filter(reqs[3]) == [{"operation": "EQUALS", "key": "display_name", "stringValue": "vsearch-model"}]
    upload = reqs[4]
    assert upload.query == {"name": "vsearch-model"}
    filename, data = upload.files["uploadfile"]
    assert filename == "model.yaml"
    docs = list(yaml.safe_load_all(data))
    assert docs[0]["pipelineInfo"]["name"] == "vsearch-model" and "platforms" in docs[1]
    assert data == default_package("model").read_bytes()  # NAME sends what the other tests' --package sends
    version_name = f"vsearch-model-{hashlib.sha256(data).hexdigest()[:12]}"
    assert _filter(reqs[5]) == [{"operation": "EQUALS", "key": "display_name", "stringValue": version_name}]
    assert reqs[6].query == {"name": version_name, "pipelineid": out["pipeline_id"]}
    assert reqs[6].files["uploadfile"][1] == data  # the same compiled YAML
    run = reqs[7].body
    assert run == {
        "experiment_id": out["experiment_id"],
        "display_name": "first",
        "pipeline_version_reference": {"pipeline_id": out["pipeline_id"], "pipeline_version_id": out["version_id"]},
        "runtime_config": {"parameters": {"seed": 3, "preset": "tiny"}},
    }
    assert out["run_id"] in kfp_server.runs
    assert kfp_server.versions[out["version_id"]]["display_name"] == version_name


def test_resubmitting_reuses_experiment_pipeline_and_version_and_a_change_adds_a_version(kfp_server, capsys, model):
    base = ["submit", *model, "--host", kfp_server.url, "--run-name", "r"]
    code, first, _ = _run(capsys, base)
    assert code == 0
    n = len(kfp_server.requests)
    code, again, _ = _run(capsys, base)
    assert code == 0
    assert [r.route for r in kfp_server.requests[n:]] == [
        "GET /healthz", "GET /experiments", "GET /pipelines", f"GET /pipelines/{first['pipeline_id']}/versions", "POST /runs",
    ]
    assert (again["experiment_id"], again["pipeline_id"], again["version_id"]) == (
        first["experiment_id"], first["pipeline_id"], first["version_id"])
    assert again["run_id"] != first["run_id"]

    n = len(kfp_server.requests)
    code, changed, _ = _run(capsys, ["submit", "model", "--host", kfp_server.url, "--run-name", "r",
                                     "--set", "image=registry.example/vsearch:0.2.0"])
    assert code == 0
    assert "POST /pipelines/upload_version" in [r.route for r in kfp_server.requests[n:]]
    assert "POST /pipelines/upload" not in [r.route for r in kfp_server.requests[n:]]
    assert changed["pipeline_id"] == first["pipeline_id"] and changed["version_id"] != first["version_id"]
    spec = kfp_server.versions[changed["version_id"]]["pipeline_spec"]
    # Steps with an accelerator keep the GPU image (gpu_image), the others take the new one.
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {"registry.example/vsearch:0.2.0",
                                                                                              GPU_IMAGE}


def test_schedule_creates_a_cron_recurring_run_on_the_pipeline_version(kfp_server, capsys, model):
    code, out, _ = _run(capsys, ["schedule", *model, "--host", kfp_server.url, "--cron", "0 0 3 * * 1",
                                 "--param", "preset=default"])
    assert code == 0
    routes = kfp_server.routes()
    assert routes[-2:] == ["GET /recurringruns", "POST /recurringruns"]
    listing = kfp_server.requests[-2]
    assert listing.query["experiment_id"] == out["experiment_id"]
    assert _filter(listing) == [{"operation": "EQUALS", "key": "display_name", "stringValue": "vsearch-model-recurring"}]
    body = kfp_server.requests[-1].body
    assert body == {
        "experiment_id": out["experiment_id"],
        "display_name": "vsearch-model-recurring",
        "mode": "ENABLE",
        "no_catchup": True,
        "max_concurrency": 1,
        "trigger": {"cron_schedule": {"cron": "0 0 3 * * 1"}},
        "pipeline_version_reference": {"pipeline_id": out["pipeline_id"], "pipeline_version_id": out["version_id"]},
        "runtime_config": {"parameters": {"preset": "default"}},
    }
    assert list(kfp_server.recurring_runs) == [out["recurring_run_id"]]
    assert out["deleted_recurring_run_ids"] == []


def test_schedule_update_recreates_the_recurring_run_and_deletes_the_old_one(kfp_server, capsys, model):
    args = ["schedule", *model, "--host", kfp_server.url, "--schedule-name", "retrain"]
    code, first, _ = _run(capsys, args + ["--cron", "0 0 3 * * 1"])
    assert code == 0
    other = kfp_server.recurring_runs[first["recurring_run_id"]].copy()  # a schedule of another name stays
    other.update(recurring_run_id="rec-other", display_name="monitoring")
    kfp_server.recurring_runs["rec-other"] = other
    n = len(kfp_server.requests)
    code, second, _ = _run(capsys, args + ["--cron", "0 30 4 * * 0", "--disabled"])
    assert code == 0
    assert [r.route for r in kfp_server.requests[n:]][-3:] == [
        "GET /recurringruns",
        "POST /recurringruns",  # the new schedule exists before the old one goes
        f"DELETE /recurringruns/{first['recurring_run_id']}",
    ]
    assert second["deleted_recurring_run_ids"] == [first["recurring_run_id"]]
    assert sorted(kfp_server.recurring_runs) == sorted([second["recurring_run_id"], "rec-other"])
    new = kfp_server.recurring_runs[second["recurring_run_id"]]
    assert new["trigger"] == {"cron_schedule": {"cron": "0 30 4 * * 0"}} and new["mode"] == "DISABLE"
    assert second["version_id"] == first["version_id"]  # same YAML: no new version


def test_namespace_skips_healthz_and_scopes_the_experiment(kfp_server, capsys, model):
    code, out, _ = _run(capsys, ["submit", *model, "--host", kfp_server.url, "--namespace", "team-a", "--run-name", "r"])
    assert code == 0
    routes = kfp_server.routes(skip_healthz=False)
    assert "GET /healthz" not in routes
    assert kfp_server.requests[0].query["namespace"] == "team-a"
    assert kfp_server.experiments[out["experiment_id"]]["namespace"] == "team-a"
    lookup = next(r for r in kfp_server.requests if r.route == "GET /pipelines")
    assert lookup.query["namespace"] == "team-a"
    upload = next(r for r in kfp_server.requests if r.route == "POST /pipelines/upload")
    assert upload.query["namespace"] == "team-a"


def test_submit_of_a_precompiled_package_sends_that_file(kfp_server, capsys, default_package):
    package = default_package("model-import")
    code, out, _ = _run(capsys, ["submit", "--package", str(package), "--host", kfp_server.url, "--run-name", "r",
                                 "--param", "data_uri=s3://bucket/data"])
    assert code == 0 and out["pipeline"] == "vsearch-model-import"
    upload = next(r for r in kfp_server.requests if r.route == "POST /pipelines/upload")
    assert upload.files["uploadfile"][1] == package.read_bytes()
    assert kfp_server.requests[-1].body["runtime_config"]["parameters"] == {"data_uri": "s3://bucket/data"}


def test_bad_requests_fail_before_any_network_call(kfp_server, capsys, tmp_path):
    assert vsearch_main(["pipeline", "schedule", "model", "--host", kfp_server.url, "--cron", "0 3 * * 1"]) == 2
    assert "did you mean '0 0 3 * * 1'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipelineInfo: {name: x}\nnotAField: 1\n")
    assert vsearch_main(["pipeline", "submit", "--package", str(bad), "--host", kfp_server.url]) == 2
    assert "bad.yaml: not a valid compiled pipeline" in capsys.readouterr().err
    assert vsearch_main(["pipeline", "submit", "model", "--package", str(bad), "--host", kfp_server.url]) == 2
    assert kfp_server.requests == []


def test_unreachable_server_is_one_line_and_exit_1(kfp_server, capsys, model):
    url = kfp_server.url
    kfp_server.stop()
    assert main(["submit", *model, "--host", url, "--run-name", "r"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vsearch pipeline submit: error: cannot reach KFP")


def test_no_host_is_a_config_error(kfp_server, capsys, model):
    assert vsearch_main(["pipeline", "submit", *model]) == 2
    assert "KF_PIPELINES_ENDPOINT" in capsys.readouterr().err


@pytest.mark.parametrize("cron", ["0 0 3 * * 1", "*/30 * * * * ?", "0 0 9 ? * MON-FRI", "0 0 0 1 1/3 *"])
def test_six_field_crons_pass(cron):
    assert validate_cron(cron) == cron


@pytest.mark.parametrize("cron", ["0 3 * * 1", "0 0 3 * * 1 2026 x", "0 0 3 * * $(rm)", ""])
def test_other_crons_are_refused(cron):
    with pytest.raises(ConfigError):
        validate_cron(cron)


@pytest.mark.parametrize("how", ["service_account", "cookie"])
def test_without_a_token_env_the_projected_service_account_token_or_a_cookie_is_sent(kfp_server, capsys, tmp_path,
                                                                                    monkeypatch, how, model):
    """Issue 21 item 2: in the cluster (recurring-run CronJob) no Authorization header was sent."""
    monkeypatch.delenv("VSEARCH_KFP_TOKEN")
    if how == "service_account":
        token_file = tmp_path / "sa-token"
        token_file.write_text("projected-sa-token\n")
        monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))
    else:
        monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "absent"))
        monkeypatch.setenv("VSEARCH_KFP_COOKIE", "authservice_session=s3ss10n")
    code, _, _ = _run(capsys, ["submit", *model, "--host", kfp_server.url, "--experiment", "weekly", "--run-name", "r"])
    assert code == 0
    reqs = [r for r in kfp_server.requests if r.path != "/apis/v2beta1/healthz"]
    if how == "service_account":
        assert reqs and all(r.headers.get("authorization") == "Bearer projected-sa-token" for r in reqs)
    else:
        assert reqs and all("authservice_session=s3ss10n" in r.headers.get("cookie", "") for r in reqs)


def test_params_are_checked_against_the_pipelines_inputs_before_any_request(kfp_server, capsys, model):
    """Issue 21 item 6: `sed=3` and `preset=on` were sent as-is (a typo, and YAML's boolean 'on')."""
    for argv, expected in ((["--param", "sed=3"], "no such input"), (["--param", "seed=three"], "not a valid NUMBER_INTEGER"),
                           (["--param", "train_overrides=x: 1"], "not a valid LIST")):
        code = vsearch_main(["pipeline", "submit", *model, "--host", kfp_server.url, *argv])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert kfp_server.requests == []  # refused before anything was sent
    code, _, _ = _run(capsys, ["submit", *model, "--host", kfp_server.url, "--param", "preset=on", "--param", "seed=3",
                               "--param", "train_overrides=[train.max_steps=2]"])
    assert code == 0
    run = next(r for r in kfp_server.requests if r.method == "POST" and r.path.endswith("/runs"))
    params = run.body["runtime_config"]["parameters"]
    assert params["preset"] == "on" and params["seed"] == 3 and params["train_overrides"] == ["train.max_steps=2"]


@pytest.mark.parametrize("final,code", [("SUCCEEDED", 0), ("FAILED", 1)])
def test_submit_wait_follows_the_run_and_prints_its_url(monkeypatch, tmp_path, capsys, final, code, model):
    """Issue 21 item 6: no --wait and no run URL after submit."""
    for var in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VSEARCH_KFP_TOKEN", TOKEN)
    server = FakeKFP(run_states=("RUNNING", "RUNNING", final)).start()
    try:
        got = main(["submit", *model, "--host", server.url, "--run-name", "r", "--wait", "60", "--poll-seconds", "0.01"])
        captured = capsys.readouterr()
        out = json.loads(captured.out)
        assert got == code and out["state"] == final
        assert out["run_url"] == f"{server.url}/#/runs/details/{out['run_id']}" and out["run_url"] in captured.err
        assert [r.route for r in server.requests].count(f"GET /runs/{out['run_id']}") == 3
    finally:
        server.stop()


def test_multi_user_server_refuses_anonymous_calls_and_the_client_sends_credentials(monkeypatch, tmp_path, capsys, model):
    """The fake now enforces auth in multi-user mode (it accepted anonymous calls, which hid item 2)."""
    for var in ("KF_PIPELINES_ENDPOINT", "VSEARCH_KFP_TOKEN", "VSEARCH_KFP_COOKIE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "absent"))
    server = FakeKFP(multi_user=True).start()
    try:
        assert main(["submit", *model, "--host", server.url, "--namespace", "team", "--run-name", "r"]) == 1
        assert "401" in capsys.readouterr().err
        monkeypatch.setenv("VSEARCH_KFP_TOKEN", TOKEN)
        assert main(["submit", *model, "--host", server.url, "--namespace", "team", "--run-name", "r"]) == 0
    finally:
        server.stop()


def test_schedule_is_idempotent_an_unchanged_schedule_is_neither_deleted_nor_recreated(kfp_server, capsys, tmp_path,
                                                                                        default_package, cli_compile):
    """Issue 21 item 6: the daily scheduler CronJob deleted and recreated the recurring run every day."""
    build = tmp_path / "build"
    cli_compile(build / "b", "--name", "model-import", "--set", "image=registry.example/v:2")
    args = ["schedule", "--package", str(default_package("model-import")), "--host", kfp_server.url,
            "--schedule-name", "weekly", "--cron", "0 0 3 * * 1", "--param", "data_uri=s3://vsearch-data/latest",
            "--param", "train_overrides=[train.max_steps=2]", "--service-account", "pipeline-runner"]
    code, first, _ = _run(capsys, args)
    assert code == 0 and first["unchanged"] is False
    for _ in range(2):  # the CronJob's next days
        n = len(kfp_server.requests)
        code, again, _ = _run(capsys, args)
        assert code == 0
        writes = [r.route for r in kfp_server.requests[n:] if r.method in ("POST", "DELETE")]
        assert writes == [], writes  # no upload, no create, no delete
        assert again["unchanged"] is True and again["recurring_run_id"] == first["recurring_run_id"]
        assert again["deleted_recurring_run_ids"] == []
    assert list(kfp_server.recurring_runs) == [first["recurring_run_id"]]

    # Each setting that changes is a recreate (create first, then delete the old one).
    for change in (["--param", "data_uri=s3://vsearch-data/other"], ["--disabled"], ["--cron", "0 0 4 * * 1"],
                   ["--package", str(build / "b" / "model-import.yaml")]):
        before = list(kfp_server.recurring_runs)
        n = len(kfp_server.requests)
        code, changed, _ = _run(capsys, args + change)
        assert code == 0 and changed["unchanged"] is False, change
        routes = [r.route for r in kfp_server.requests[n:] if r.route.split()[1].startswith("/recurringruns")]
        assert routes == ["GET /recurringruns", "POST /recurringruns", f"DELETE /recurringruns/{before[0]}"], change
        assert list(kfp_server.recurring_runs) == [changed["recurring_run_id"]]
        # ... and asking for it again changes nothing.
        n = len(kfp_server.requests)
        code, same, _ = _run(capsys, args + change)
        assert code == 0 and same["unchanged"] is True, change
        assert [r.route for r in kfp_server.requests[n:] if r.method in ("POST", "DELETE")] == []


def test_schedule_keeps_one_matching_recurring_run_and_deletes_duplicates(kfp_server, capsys, model):
    args = ["schedule", *model, "--host", kfp_server.url, "--schedule-name", "retrain", "--cron", "0 0 3 * * 1"]
    code, first, _ = _run(capsys, args)
    assert code == 0
    duplicate = {**kfp_server.recurring_runs[first["recurring_run_id"]], "recurring_run_id": "rec-dup"}
    kfp_server.recurring_runs["rec-dup"] = duplicate  # e.g. two scheduler jobs raced once
    code, again, _ = _run(capsys, args)
    assert code == 0 and again["unchanged"] is True
    assert again["recurring_run_id"] == first["recurring_run_id"] and again["deleted_recurring_run_ids"] == ["rec-dup"]
    assert list(kfp_server.recurring_runs) == [first["recurring_run_id"]]
