"""A failing training run under kfp.local, as a weekly run on bad data would fail on a cluster.

The import pipeline on a dataset with a duplicate product id: validation succeeds and
publishes its report (KFP publishes no outputs of a failed task), the next step stops the run
before anything trains or reaches the online store, and the ExitHandler's ``notify_run``
records FAILED and posts it to the configured webhook (a loopback HTTP server here).
"""

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pandas as pd
import pytest

from pipelines.compiler import load_documents
from pipelines.config import load_pipeline_config
from pipelines.local import TINY_PARAMS, run_local


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append({"path": self.path, "body": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def webhook():
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/t0ken", _Hook.received
    finally:
        server.shutdown()


@pytest.mark.timeout(900)  # a whole pipeline run under kfp.local: past the 300 s default on a shared machine
@pytest.mark.integration
def test_bad_data_publishes_the_report_stops_before_training_and_the_exit_step_reports_failure(
        tmp_path, tiny_data, webhook, monkeypatch):
    url, received = webhook
    monkeypatch.setenv("VSEARCH_NOTIFY_WEBHOOK", url)  # kfp.local's task subprocesses inherit it
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    catalog = pd.read_parquet(data / "catalog.parquet")
    catalog.loc[3, "product_id"] = catalog.loc[2, "product_id"]
    catalog.to_parquet(data / "catalog.parquet", index=False)

    out = tmp_path / "runs"
    with pytest.raises(RuntimeError):
        run_local("training-import", load_pipeline_config(None, ["retry.num_retries=0"]), out,
                  {**TINY_PARAMS["training-import"], "data_uri": str(data)})
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    ran = {p.parent.name for p in run_dir.rglob("executor_output.json")}
    # Validation succeeded and its report is a published output, naming the broken rule.
    assert "validate-data" in ran
    validation = json.loads((run_dir / "validate-data" / "validation" / "validation.json").read_text())
    assert validation["success"] is False
    assert "product_id" in (run_dir / "validate-data" / "report").read_text()
    # The run stopped at the next step: nothing trained, nothing reached the online store.
    assert not ran & {"build-training-set", "materialize-features", "train-model", "train-model-2", "gate-model"}
    # The exit step ran after the failure and recorded it ...
    assert "notify-run" in ran
    record = json.loads((run_dir / "notify-run" / "run_status").read_text())
    assert record["state"] == "FAILED" and record["pipeline"] == "vsearch-training-import"
    assert record["webhook"] == "posted (HTTP 204)" and url not in json.dumps(record)
    # ... and posted it, once, to the configured webhook.
    assert [r["path"] for r in received] == ["/hooks/t0ken"]
    assert received[0]["body"]["run"]["state"] == "FAILED" and "FAILED" in received[0]["body"]["text"]


@pytest.mark.parametrize("name", ["training", "training-import", "model", "model-import"])
def test_the_pipelines_body_runs_inside_an_exit_handler_whose_step_reads_the_webhook_secret(default_package, name):
    spec, platform = (load_documents(default_package(name)) + [{}])[:2]
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "notify-run"}  # nothing runs outside the handler
    notify = root["notify-run"]
    assert notify["dependentTasks"] == ["exit-handler-1"]
    assert notify["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert notify["inputs"]["parameters"]["status"]["taskFinalStatus"]["producerTask"] == "exit-handler-1"
    assert notify["cachingOptions"].get("enableCache") is not True  # a notification is never a cache hit
    secrets = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-notify-run"]["secretAsEnv"]
    assert secrets == [{"secretName": "vsearch-notify", "secretNameParameter": {"runtimeValue": {"constant": "vsearch-notify"}},
                        "keyToEnv": [{"secretKey": "webhook_url", "envVar": "VSEARCH_NOTIFY_WEBHOOK"}], "optional": True}]
