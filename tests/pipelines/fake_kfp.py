"""A fake Kubeflow Pipelines API server speaking the v2beta1 REST JSON, for tests.

No Kubeflow can run here, so submission and scheduling tests drive the real ``kfp.Client``
against this server. It implements the endpoints ``kfp.Client`` uses for experiments,
pipelines (multipart ``pipelines/upload`` and ``pipelines/upload_version``), pipeline
versions, runs and recurring runs, with the request and response shapes of
``kfp_server_api`` (snake_case fields, except ``recurringRuns`` in the recurring-run list,
as the real API gateway sends it). Every request is recorded for exact assertions.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

API = "/apis/v2beta1"
CREATED_AT = "2026-01-01T00:00:00Z"


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None  # parsed JSON body, or None
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # multipart: field -> (filename, data)

    @property
    def route(self) -> str:
        """``METHOD path`` with the API prefix removed, e.g. ``POST /pipelines/upload``."""
        return f"{self.method} {self.path[len(API):] if self.path.startswith(API) else self.path}"


class FakeKFP:
    """The fake server's state and request log; start with ``start()``, stop with ``stop()``."""

    def __init__(self, multi_user: bool = False, run_states: tuple[str, ...] = ("RUNNING", "SUCCEEDED")) -> None:
        self.multi_user = multi_user
        # What successive GET /runs/{id} report after PENDING (the last one sticks).
        self.run_states = run_states
        self.requests: list[Request] = []
        self.experiments: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}  # version id -> version (with pipeline_id)
        self.runs: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeKFP":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _handle(self) -> None:
                fake._dispatch(self)

            do_GET = do_POST = do_DELETE = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-kfp", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    # -- helpers for tests -----------------------------------------------------------
    def routes(self, *, skip_healthz: bool = True) -> list[str]:
        return [r.route for r in self.requests if not (skip_healthz and r.route == "GET /healthz")]

    def seed_experiment(self, name: str, namespace: str = "") -> dict:
        exp = {"experiment_id": self._new_id("exp"), "display_name": name, "namespace": namespace,
               "created_at": CREATED_AT, "storage_state": "AVAILABLE"}
        self.experiments[exp["experiment_id"]] = exp
        return exp

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids):04d}"

    # -- request handling ------------------------------------------------------------
    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        content_type = h.headers.get("Content-Type", "")
        req = Request(h.command, parts.path, query, {k.lower(): v for k, v in h.headers.items()})
        if content_type.startswith("multipart/form-data"):
            req.files = _parse_multipart(content_type, raw)
        elif raw:
            req.body = json.loads(raw)
        with self._lock:
            self.requests.append(req)
            try:
                # Multi-user KFP sits behind an auth proxy: no bearer token and no session cookie, no entry.
                authed = req.headers.get("authorization", "").startswith("Bearer ") or "cookie" in req.headers
                if self.multi_user and not authed and not req.path.endswith("/healthz"):
                    raise PermissionError("no credentials")
                status, payload = self._route(req)
            except PermissionError as err:
                status, payload = 401, {"error": f"unauthenticated: {err}", "code": 16, "message": f"unauthenticated: {err}"}
            except KeyError as err:
                status, payload = 404, {"error": f"not found: {err}", "code": 5, "message": f"not found: {err}"}
            except ValueError as err:
                status, payload = 400, {"error": str(err), "code": 3, "message": str(err)}
            except Exception as err:  # a bug in the fake must show up as a 500, not a hang-up
                status, payload = 500, {"error": repr(err), "code": 13, "message": repr(err)}
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _route(self, req: Request) -> tuple[int, Any]:
        path = req.path[len(API):] if req.path.startswith(API) else None
        if path is None:
            raise KeyError(req.path)
        segs = [s for s in path.split("/") if s]
        m = req.method
        if segs == ["healthz"] and m == "GET":
            return 200, {"multi_user": self.multi_user, "pipeline_store": "database"}
        if segs[:1] == ["experiments"]:
            if len(segs) == 1 and m == "GET":
                items = [e for e in self.experiments.values() if _matches(e, req.query)]
                if self.multi_user:
                    items = [e for e in items if e.get("namespace") == req.query.get("namespace")]
                return 200, _page("experiments", items)
            if len(segs) == 1 and m == "POST":
                body = dict(req.body)
                if not body.get("display_name"):
                    raise ValueError("experiment display_name is required")
                exp = {**body, "experiment_id": self._new_id("exp"), "created_at": CREATED_AT,
                       "storage_state": "AVAILABLE"}
                self.experiments[exp["experiment_id"]] = exp
                return 200, exp
            if len(segs) == 2 and m == "GET":
                return 200, self.experiments[segs[1]]
        if segs == ["pipelines", "upload"] and m == "POST":
            return 200, self._upload(req, new_pipeline=True)
        if segs == ["pipelines", "upload_version"] and m == "POST":
            return 200, self._upload(req, new_pipeline=False)
        if segs[:1] == ["pipelines"]:
            if len(segs) == 1 and m == "GET":
                items = [p for p in self.pipelines.values() if _matches(p, req.query)]
                items = [p for p in items if p.get("namespace", "") == req.query.get("namespace", "")]
                return 200, _page("pipelines", items)
            if len(segs) == 2 and m == "GET":
                return 200, self.pipelines[segs[1]]
            if len(segs) == 3 and segs[2] == "versions" and m == "GET":
                self.pipelines[segs[1]]
                items = [v for v in self.versions.values() if v["pipeline_id"] == segs[1] and _matches(v, req.query)]
                return 200, _page("pipeline_versions", [_public_version(v) for v in items])
            if len(segs) == 4 and segs[2] == "versions" and m == "GET":
                version = self.versions[segs[3]]
                if version["pipeline_id"] != segs[1]:
                    raise KeyError(segs[3])
                return 200, _public_version(version)
        if segs[:1] == ["runs"] and len(segs) == 2 and m == "GET":
            run = self.runs[segs[1]]
            polls = run.setdefault("_polls", 0)
            run["_polls"] = polls + 1
            run["state"] = self.run_states[min(polls, len(self.run_states) - 1)]
            return 200, {k: v for k, v in run.items() if not k.startswith("_")}
        if segs == ["runs"] and m == "POST":
            body = dict(req.body)
            self._check_reference(body)
            run = {**body, "run_id": self._new_id("run"), "created_at": CREATED_AT, "state": "PENDING",
                   "storage_state": "AVAILABLE"}
            self.runs[run["run_id"]] = run
            return 200, run
        if segs[:1] == ["recurringruns"]:
            if len(segs) == 1 and m == "POST":
                body = dict(req.body)
                self._check_reference(body)
                cron = (body.get("trigger") or {}).get("cron_schedule", {}).get("cron")
                if cron is not None and len(cron.split()) != 6:
                    raise ValueError(f"cron '{cron}' must have 6 fields (with seconds)")
                rec = {**body, "recurring_run_id": self._new_id("rec"), "created_at": CREATED_AT,
                       "updated_at": CREATED_AT, "status": "ENABLED" if body.get("mode") == "ENABLE" else "DISABLED"}
                self.recurring_runs[rec["recurring_run_id"]] = rec
                return 200, rec
            if len(segs) == 1 and m == "GET":
                items = [r for r in self.recurring_runs.values() if _matches(r, req.query)]
                if "experiment_id" in req.query:
                    items = [r for r in items if r.get("experiment_id") == req.query["experiment_id"]]
                page = _page("recurring_runs", items)
                # The real gateway names this field in camelCase (kfp_server_api's attribute_map).
                if "recurring_runs" in page:
                    page["recurringRuns"] = page.pop("recurring_runs")
                return 200, page
            if len(segs) == 2 and m == "GET":
                return 200, self.recurring_runs[segs[1]]
            if len(segs) == 2 and m == "DELETE":
                del self.recurring_runs[segs[1]]
                return 200, {}
        raise KeyError(f"{m} {req.path}")

    def _check_reference(self, body: dict) -> None:
        ref = body.get("pipeline_version_reference")
        if ref:
            version = self.versions[ref["pipeline_version_id"]]
            if version["pipeline_id"] != ref["pipeline_id"]:
                raise ValueError("pipeline_version_reference: version does not belong to the pipeline")
        elif not body.get("pipeline_spec"):
            raise ValueError("either pipeline_spec or pipeline_version_reference is required")
        if body.get("experiment_id") and body["experiment_id"] not in self.experiments:
            raise KeyError(body["experiment_id"])

    def _upload(self, req: Request, new_pipeline: bool) -> dict:
        if "uploadfile" not in req.files:
            raise ValueError("uploadfile is required")
        filename, data = req.files["uploadfile"]
        docs = [d for d in yaml.safe_load_all(data.decode()) if d is not None]  # spec + platform spec
        if not docs or not isinstance(docs[0], dict) or "pipelineInfo" not in docs[0]:
            raise ValueError(f"{filename}: not a compiled pipeline spec")
        name = req.query.get("name") or req.query.get("display_name")
        if new_pipeline:
            if not name:
                raise ValueError("name is required")
            if any(p["display_name"] == name for p in self.pipelines.values()):
                raise ValueError(f"pipeline '{name}' already exists")
            pipeline = {"pipeline_id": self._new_id("pl"), "display_name": name, "name": name,
                        "description": req.query.get("description", ""), "created_at": CREATED_AT,
                        "namespace": req.query.get("namespace", "")}
            self.pipelines[pipeline["pipeline_id"]] = pipeline
            pipeline_id = pipeline["pipeline_id"]
        else:
            pipeline_id = req.query.get("pipelineid") or ""
            self.pipelines[pipeline_id]
            if any(v["pipeline_id"] == pipeline_id and v["display_name"] == name for v in self.versions.values()):
                raise ValueError(f"pipeline version '{name}' already exists")
        version = {"pipeline_version_id": self._new_id("ver"), "pipeline_id": pipeline_id,
                   "display_name": name, "name": name, "description": req.query.get("description", ""),
                   "created_at": CREATED_AT, "pipeline_spec": docs[0], "_docs": docs}
        self.versions[version["pipeline_version_id"]] = version
        return self.pipelines[pipeline_id] if new_pipeline else _public_version(version)


def _public_version(version: dict) -> dict:
    return {k: v for k, v in version.items() if not k.startswith("_")}


def _page(key: str, items: list[dict]) -> dict:
    # Like the real API, an empty list is omitted from the JSON.
    page: dict[str, Any] = {"total_size": len(items)}
    if items:
        page[key] = items
    return page


def _matches(item: dict, query: dict[str, str]) -> bool:
    """Apply a v2beta1 filter (only EQUALS predicates, the ones kfp.Client sends)."""
    if not query.get("filter"):
        return True
    flt = json.loads(query["filter"])
    for pred in flt.get("predicates", []):
        op = pred.get("operation")
        if op not in ("EQUALS", 1):  # kfp.Client sends the enum number
            raise ValueError(f"unsupported filter operation {op!r}")
        value = pred.get("stringValue", pred.get("string_value"))
        if item.get(pred["key"]) != value:
            return False
    return True


def _parse_multipart(content_type: str, raw: bytes) -> dict[str, tuple[str, bytes]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    files = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        files[name] = (part.get_filename() or "", part.get_payload(decode=True))
    return files
