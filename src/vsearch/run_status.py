"""The final status of a pipeline run: a record, and a webhook post when one is configured.

A weekly run that fails must be heard. The pipelines wrap their body in ``dsl.ExitHandler``
whose exit step (``components/notify_run.py``) hands KFP's ``PipelineTaskFinalStatus`` to
``notify``: it always returns a record (pipeline, state, KFP job, error) for the run's
artifacts, and posts it to a webhook only when both hold:

- a URL is configured: ``$VSEARCH_NOTIFY_WEBHOOK``, on a cluster from the optional Secret
  ``vsearch-notify`` (key ``webhook_url``; pipelines/config.py). No URL, nothing is fetched.
- the rule says so (``should_post``): by default on every state but SUCCEEDED.

The URL is a secret (chat webhooks carry their token in the path): it is never recorded or
printed. A post that fails is recorded, not raised: the exit step must not turn a succeeded
run into a failed one because a chat service was down.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime, timezone

from vsearch.config import ConfigError

WEBHOOK_ENV = "VSEARCH_NOTIFY_WEBHOOK"
NOTIFY_ON = ("failure", "always", "never")
SUCCEEDED = "SUCCEEDED"
TIMEOUT_S = 10.0


def should_post(state: str, notify_on: str = "failure") -> bool:
    """Whether a run that ended in ``state`` (KFP: SUCCEEDED, FAILED, CANCELLED ...) is posted.

    ``notify_on``: ``failure`` (every state but SUCCEEDED: a state we do not know is a failure),
    ``always`` or ``never``.

    Raises:
        ConfigError: an unknown ``notify_on``.
    """
    if notify_on not in NOTIFY_ON:
        raise ConfigError(f"notify_on must be one of {list(NOTIFY_ON)}, got {notify_on!r}")
    return notify_on == "always" or (notify_on == "failure" and state != SUCCEEDED)


def status_record(status: Mapping, pipeline: str) -> dict:
    """A JSON-able record of KFP's final status (``PipelineTaskFinalStatus`` fields as a mapping)."""
    state = str(status.get("state") or "UNKNOWN")
    return {
        "pipeline": pipeline,
        "state": state,
        "succeeded": state == SUCCEEDED,
        "job": str(status.get("pipeline_job_resource_name") or ""),
        "task": str(status.get("pipeline_task_name") or ""),
        "error": {"code": status.get("error_code"), "message": str(status.get("error_message") or "")},
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def post(url: str, record: dict, timeout: float = TIMEOUT_S) -> int:
    """POST ``record`` as JSON (plus a one-line ``text`` that chat webhooks display); the HTTP status.

    Raises:
        ConfigError: the URL is not http(s).
        OSError: the post failed (connection, timeout, a non-2xx answer).
    """
    if not url.startswith(("https://", "http://")):
        raise ConfigError(f"${WEBHOOK_ENV} must be an http(s) URL")
    text = f"vsearch: pipeline {record['pipeline']} {record['state']}" + (f" ({record['job']})" if record["job"] else "")
    if record["error"]["message"]:
        text += f": {record['error']['message']}"
    body = json.dumps({"text": text, "run": record}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (scheme checked above)
        return int(answer.status)


def notify(status: Mapping, pipeline: str, notify_on: str = "failure", env: Mapping[str, str] | None = None) -> dict:
    """The run's status record, with ``webhook``: what happened to the post.

    ``webhook`` is ``not configured`` (no URL: nothing fetched), ``not due (<state>)``,
    ``posted (HTTP <code>)`` or ``failed: <why>`` (the URL is never in it).
    """
    env = os.environ if env is None else env
    record = status_record(status, pipeline)
    url = env.get(WEBHOOK_ENV, "").strip()
    if not url:
        record["webhook"] = "not configured"
    elif not should_post(record["state"], notify_on):
        record["webhook"] = f"not due ({record['state']})"
    else:
        try:
            record["webhook"] = f"posted (HTTP {post(url, record)})"
        except (OSError, ConfigError) as err:
            # urllib's errors can quote the URL: keep the kind and the reason only.
            reason = getattr(err, "reason", None) or getattr(err, "code", None) or type(err).__name__
            record["webhook"] = f"failed: {type(err).__name__}: {reason}"
    return record
