"""The final-status record and its webhook: the rule, no fetch without a URL, failures recorded."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from components.notify_run import notify_run
from vsearch.config import ConfigError
from vsearch.run_status import NOTIFY_ON, WEBHOOK_ENV, notify, should_post

FAILED = {"state": "FAILED", "pipeline_job_resource_name": "projects/p/pipelineJobs/run-7",
          "pipeline_task_name": "exit-handler-1", "error_code": 9, "error_message": "build-training-set failed"}
SUCCEEDED = {**FAILED, "state": "SUCCEEDED", "error_code": None, "error_message": ""}


@pytest.fixture()
def hook():
    received, status = [], {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(status["code"])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/secret-path", received, status
    finally:
        server.shutdown()


@pytest.mark.parametrize("state", ["SUCCEEDED", "FAILED", "CANCELLED", "SYSTEM_ERROR", "UNKNOWN"])
def test_the_rule_posts_every_state_but_success_by_default(state):
    assert should_post(state) is (state != "SUCCEEDED")
    assert should_post(state, "always") is True and should_post(state, "never") is False
    with pytest.raises(ConfigError, match="notify_on must be one of"):
        should_post(state, "sometimes")
    assert NOTIFY_ON == ("failure", "always", "never")


def test_without_a_url_nothing_is_fetched_and_the_record_says_so(hook):
    _, received, _ = hook
    record = notify(FAILED, "vsearch-training", env={})
    assert record["webhook"] == "not configured" and received == []
    assert record["state"] == "FAILED" and record["succeeded"] is False
    assert record["job"] == "projects/p/pipelineJobs/run-7"
    assert record["error"] == {"code": 9, "message": "build-training-set failed"}


def test_a_failure_is_posted_a_success_is_not_and_the_url_is_never_recorded(hook):
    url, received, status = hook
    record = notify(FAILED, "vsearch-training", env={WEBHOOK_ENV: url})
    assert record["webhook"] == "posted (HTTP 200)"
    (body,) = received
    assert body["run"]["state"] == "FAILED" and body["run"]["pipeline"] == "vsearch-training"
    assert body["text"].startswith("vsearch: pipeline vsearch-training FAILED") and "build-training-set failed" in body["text"]
    assert notify(SUCCEEDED, "vsearch-training", env={WEBHOOK_ENV: url})["webhook"] == "not due (SUCCEEDED)"
    assert len(received) == 1
    # A webhook that answers 500, or a URL that is not http(s): recorded, never raised, URL kept out.
    status["code"] = 500
    failed = notify(FAILED, "vsearch-training", env={WEBHOOK_ENV: url})
    assert failed["webhook"].startswith("failed: HTTPError") and "secret-path" not in json.dumps(failed)
    assert notify(FAILED, "p", env={WEBHOOK_ENV: "file:///etc/passwd"})["webhook"].startswith("failed: ConfigError")


def test_notify_run_writes_the_record_and_returns_the_state(tmp_path, monkeypatch):
    from kfp.dsl import Artifact, PipelineTaskFinalStatus

    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    out = Artifact(name="run_status", uri=str(tmp_path / "run_status"))
    status = PipelineTaskFinalStatus(state="FAILED", pipeline_job_resource_name="run-7", pipeline_task_name="exit-handler-1",
                                     error_code=1, error_message="boom")
    assert notify_run.python_func(status=status, run_status=out, pipeline="vsearch-model") == "FAILED"
    record = json.loads((tmp_path / "run_status").read_text())
    assert record["pipeline"] == "vsearch-model" and record["webhook"] == "not configured"
    assert out.metadata == {"state": "FAILED", "webhook": "not configured"}
