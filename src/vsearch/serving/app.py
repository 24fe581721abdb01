"""The HTTP search service (FastAPI + uvicorn) with A/B routing and a small web page.

``vsearch serve --model DIR --alias NAME --data DIR`` serves one model; ``--rollout FILE``
serves both arms of a release's A/B test, each with its own model and its own alias: users
are assigned by the rollout's sticky hash of the user id (form field ``user_id`` or header
``X-User-Id``; anonymous users get the control, or the treatment once it has 100%). The file is re-read when it changes (a
``vsearch release ramp`` takes effect without a restart; a change of arms needs one).
Encoders are loaded once per variant. With a rollout (or ``--events DIR``) every answered
search is logged as an impression and ``POST /click`` takes click events
(`vsearch.rollout.events`, append-only), the evidence ``vsearch rollout analyze`` reads.

Endpoints:
- ``POST /search`` multipart: ``image`` (file), ``text`` (optional reformulation), ``k``
  (default 10), ``user_id`` (optional) -> JSON ``{request_id, variant, model_version, alias,
  results}``. Bad input gets a 4xx JSON ``{"error": message}``: not an image / corrupt (400),
  too large (413, counted while the body streams in), wrong content type (415), k out of
  range / text too long / missing field (422). Decoding runs off the event loop.
- ``POST /click`` JSON ``{request_id, product_id, user_id?, type?: click|add_to_cart}`` -> 204.
- ``GET /healthz`` (process up), ``GET /readyz`` (models loaded; every alias on a verified
  collection that its arm's own model built, naming both versions otherwise; 503 if not).
- ``GET /`` the search page; ``GET /products/{id}/image`` a catalog image, only from files
  under the data folder.
"""


import argparse
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from vsearch.serving.search import (
    ALLOWED_CONTENT_TYPES,
    DEFAULT_MAX_K,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_TEXT_CHARS,
    DEFAULT_MAX_UPLOAD_BYTES,
    QueryError,
    Searcher,
    check_k,
    check_text,
    decode_query_image,
    hydrate,
)

# Room for the multipart envelope and the small text fields around the image.
_ENVELOPE_BYTES = 64 * 1024


@dataclass
class Limits:
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    max_k: int = DEFAULT_MAX_K


@dataclass
class ServiceState:
    """Everything a request needs, built once at startup."""

    searchers: dict[str, Searcher]  # variant name -> searcher (variants may share one)
    hydrator: object
    data_dir: str
    rollout: object | None = None  # vsearch.rollout.schema.RolloutConfig
    limits: Limits = field(default_factory=Limits)
    rollout_path: str | None = None
    events: object | None = None  # vsearch.rollout.events.EventLog
    _rollout_stamp: tuple = ()
    _checked_at: float = 0.0

    def refresh_rollout(self, min_interval_s: float = 1.0) -> None:
        """Pick up a new traffic share from the rollout file (same arms only; checked at most once a second)."""
        if not self.rollout_path or time.monotonic() - self._checked_at < min_interval_s:
            return
        self._checked_at = time.monotonic()
        try:
            st = os.stat(self.rollout_path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._rollout_stamp:
                return
            from vsearch.rollout.schema import load_rollout

            new = load_rollout(self.rollout_path)
        except Exception as err:  # noqa: BLE001 - a bad edit must not take the service down
            print(f"vsearch serve: keeping the loaded rollout: {err}", flush=True)
            return
        self._rollout_stamp = stamp
        same_arms = all(new.variants()[n].model == v.model and new.variants()[n].milvus_alias == v.milvus_alias
                        for n, v in self.rollout.variants().items())
        if new.experiment_id == self.rollout.experiment_id and same_arms:
            self.rollout = new
        else:
            print("vsearch serve: the rollout file now names other arms: restart to serve them", flush=True)

    def serving_arms(self) -> list[str]:
        """The variants that can receive a request now: both during an A/B test, only the
        treatment once the plan gives it 100% (promoted: the control's alias has moved to the
        treatment's collection, so the control model no longer matches it), only the control at 0%."""
        if self.rollout is None:
            return list(self.searchers)
        self.refresh_rollout()
        share = self.rollout.traffic.treatment_percent
        return [n for n in self.searchers if (n == "treatment" and share > 0) or (n == "control" and share < 100)]

    def route(self, user_id: str | None) -> str:
        if self.rollout is None:
            return next(iter(self.searchers))
        self.refresh_rollout()
        if not user_id:  # no user to bucket: the arm everyone gets outside the test
            return "treatment" if self.rollout.traffic.treatment_percent >= 100 else "control"
        from vsearch.rollout.schema import assign_variant

        return assign_variant(self.rollout, user_id).name


def build_state(
    *,
    data_dir: str,
    store,
    index_cfg,
    model: str | None = None,
    alias: str | None = None,
    rollout_path: str | None = None,
    hydrate_spec: str = "catalog",
    limits: Limits | None = None,
    device: str = "cpu",
    events_dir: str | None = None,
    hydrator=None,
) -> ServiceState:
    """Load the encoders (once per distinct model + alias) and check every alias.

    An alias that is missing or on a collection another model built does not stop the start:
    the service comes up not ready (``/readyz`` 503 naming both versions) and refuses to
    search that arm, so a probe, not a crash loop, tells the operator what is wrong.
    """
    from vsearch.indexing.store import IndexError_
    from vsearch.serving.search import make_hydrator

    rollout = None
    if rollout_path:
        from vsearch.rollout.schema import load_rollout

        rollout = load_rollout(rollout_path)
        for name, v in rollout.variants().items():
            if not v.model.uri:
                raise ValueError(f"{rollout_path}: arm {name} names no model")
        wanted = {name: (v.model.uri, v.milvus_alias) for name, v in rollout.variants().items()}
        if events_dir is None:
            events_dir = str(Path(rollout_path).parent / "events")
    else:
        if not (model and alias):
            raise ValueError("give --model and --alias, or --rollout FILE")
        wanted = {"default": (model, alias)}
    loaded: dict[tuple[str, str], Searcher] = {}
    searchers = {}
    for name, key in wanted.items():
        if key not in loaded:
            loaded[key] = Searcher(key[0], key[1], store, index_cfg, device=device)
            try:
                loaded[key].prepare()
            except IndexError_ as err:
                print(f"vsearch serve: arm {name} not ready: {err}", flush=True)
        searchers[name] = loaded[key]
    events = None
    if events_dir:
        from vsearch.rollout.events import EventLog

        events = EventLog(events_dir)
    state = ServiceState(searchers, hydrator or make_hydrator(hydrate_spec, data_dir), str(data_dir), rollout, limits or Limits(),
                         rollout_path=str(rollout_path) if rollout_path else None, events=events)
    if rollout_path:
        st = os.stat(rollout_path)
        state._rollout_stamp = (st.st_mtime_ns, st.st_size)
    return state


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _log_impression(state: ServiceState, record: dict) -> None:
    if state.events is not None:
        state.events.impression(record)


async def _read_query(request, limits: Limits):
    """(PIL image, text, k, form) of a /search request, or QueryError (4xx).

    The body is counted while it streams in and refused past the limit (a chunked upload with
    no Content-Length is not spooled in full first); the image is decoded in a worker thread,
    never on the event loop.
    """
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile

    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise QueryError(415, f"send multipart/form-data with an 'image' file, not '{content_type[:80] or 'no content type'}'")
    cap = limits.max_upload_bytes + _ENVELOPE_BYTES
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > cap:
        raise QueryError(413, f"image too large: request of {int(length)} bytes (limit {limits.max_upload_bytes} bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise QueryError(413, f"image too large: request over {cap} bytes (limit {limits.max_upload_bytes} bytes)")
    request._body = bytes(body)  # starlette's form parser reads the buffered body, not the stream again
    try:
        form = await request.form(max_files=1, max_fields=10, max_part_size=64 * 1024)
    except Exception as err:  # malformed multipart, too many parts
        raise QueryError(400, f"malformed multipart form: {str(getattr(err, 'detail', err))[:200]}") from err
    upload = form.get("image")
    if upload is None:
        raise QueryError(422, "missing form field 'image' (the photo to search with)")
    if not isinstance(upload, UploadFile):
        raise QueryError(422, "form field 'image' must be a file upload")
    upload_type = (upload.content_type or "").split(";")[0].strip().lower()
    if upload_type not in ALLOWED_CONTENT_TYPES:
        raise QueryError(415, f"wrong content type '{upload_type[:60] or 'none'}' for 'image'; send one of {', '.join(ALLOWED_CONTENT_TYPES)}")
    raw = await upload.read(limits.max_upload_bytes + 1)  # never more than the limit + 1
    k = check_k(form.get("k", "10"), limits.max_k)
    text = check_text(form.get("text", ""), limits.max_text_chars)
    image = await run_in_threadpool(decode_query_image, raw, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_pixels)
    import hashlib

    digest = hashlib.sha256(raw + b"\0" + text.encode()).hexdigest()[:16]
    fields = {key: form.get(key) for key in ("user_id",)} | {"_digest": digest}
    return image, text, k, fields


def _error(status: int, message: str):
    """The service's error answer: ``{"error": message}`` with ``status``."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def _product_image(state: ServiceState, product_id: str):
    """``GET /products/{product_id}/image``: the product's image file, if local and under the data folder."""
    from fastapi.responses import FileResponse

    from vsearch import schema
    from vsearch.schema import DataError

    row = state.hydrator.lookup([product_id]).get(product_id)
    if row is None:
        return _error(404, f"unknown product '{product_id}'")
    uri = row.get("image_uri", "")
    try:
        path = schema.resolve_uri(state.data_dir, uri)  # refuses anything outside the data folder
    except DataError as err:
        return _error(404, f"image of '{product_id}' is not served: {err.rule}")
    if "://" in path or not Path(path).is_file():
        return _error(404, f"image of '{product_id}' is not a local file under the data folder")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


def _click_record(body: dict, header_user: str | None) -> dict:
    """The event record of a ``POST /click`` body; QueryError (422) names a bad field."""
    from vsearch.rollout.events import CLICK_TYPES

    user = body.get("user_id") or header_user
    rid, pid, kind = body.get("request_id"), body.get("product_id"), body.get("type", "click")
    if not isinstance(rid, str) or not rid.isalnum() or len(rid) > 64:
        raise QueryError(422, "request_id must be the request_id a /search answer returned")
    if not isinstance(pid, str) or not 0 < len(pid) <= 512:
        raise QueryError(422, "product_id must be a non-empty string")
    if kind not in CLICK_TYPES:
        raise QueryError(422, f"type must be one of {list(CLICK_TYPES)}")
    return {"ts": time.time(), "request_id": rid, "user_id": str(user)[:200] if user else None,
            "product_id": pid, "type": kind}


async def _search(state: ServiceState, request):
    """``POST /search``: route the user to a variant, search, hydrate and log the impression."""
    from starlette.concurrency import run_in_threadpool

    started = time.perf_counter()
    try:
        image, text, k, form = await _read_query(request, state.limits)
    except QueryError as err:
        return _error(err.status, err.message)
    user_id = str(form.get("user_id") or request.headers.get("x-user-id") or "")[:200]
    variant = state.route(user_id)
    searcher = state.searchers[variant]
    request_id = uuid.uuid4().hex
    record = {"ts": time.time(), "request_id": request_id, "experiment_id": getattr(state.rollout, "experiment_id", None),
              "arm": variant, "user_id": user_id or None, "query": form.get("_digest"), "k": k,
              "model_version": searcher.version,
              "treatment_percent": state.rollout.traffic.treatment_percent if state.rollout else None}
    try:
        hits, used = await run_in_threadpool(searcher.query, image, text, k)
        results = hydrate(hits, state.hydrator)
    except Exception as err:  # noqa: BLE001 - backend trouble (or an embedding-space mismatch) is a 503, not a 500
        _log_impression(state, record | {"status": 503, "results": [], "latency_ms": _ms(started)})
        return _error(503, f"search backend unavailable: {type(err).__name__}: {err}")
    for r in results:
        r["image_url"] = f"/products/{r['product_id']}/image"
    took = _ms(started)
    _log_impression(state, record | {"status": 200, "results": [r["product_id"] for r in results], "latency_ms": took,
                                     "collection": getattr(searcher, "_checked", (None,))[0]})
    return {
        "request_id": request_id,
        "variant": variant,
        "user_id": user_id or None,
        "model_version": searcher.version,
        "alias": searcher.alias,
        "text_used": used,
        "k": k,
        "took_ms": took,
        "results": results,
    }


def create_app(state: ServiceState):
    """The FastAPI application over a built :class:`ServiceState`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="vsearch", docs_url=None, redoc_url=None)
    app.state.vsearch = state
    page = (resources.files("vsearch.serving") / "static" / "index.html").read_text()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        return _error(exc.status_code, str(exc.detail))

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        checks = {}
        serving = state.serving_arms()
        for name, searcher in state.searchers.items():
            ok, detail = searcher.ready()
            checks[name] = {"ready": ok, "detail": detail, "model_version": searcher.version, "traffic": name in serving}
        # An arm the plan sends no traffic to (the control after a promotion) does not hold the service back.
        ready = bool(serving) and all(checks[name]["ready"] for name in serving)
        return JSONResponse({"ready": ready, "variants": checks}, status_code=200 if ready else 503)

    @app.get("/", response_class=HTMLResponse)
    def index():
        return HTMLResponse(page)

    @app.get("/products/{product_id}/image")
    def product_image(product_id: str):
        return _product_image(state, product_id)

    @app.post("/search")
    async def search(request: Request):
        return await _search(state, request)

    @app.post("/click")
    async def click(request: Request):
        if state.events is None:
            return _error(404, "this service records no events (start it with --rollout or --events DIR)")
        try:
            body = await request.json()
        except Exception:  # noqa: BLE001 - any unparsable body is the client's error
            return _error(400, "send a JSON object {request_id, product_id, user_id?, type?}")
        if not isinstance(body, dict):
            return _error(400, "send a JSON object {request_id, product_id, user_id?, type?}")
        try:
            record = _click_record(body, request.headers.get("x-user-id"))
        except QueryError as err:
            return _error(err.status, err.message)
        state.events.click(record)
        return Response(status_code=204)

    return app


def main(argv: list[str] | None = None) -> int:
    """``vsearch serve --model DIR --alias NAME --data DIR [--rollout FILE] [--host 127.0.0.1] [--port 8000]``."""
    from vsearch.serving.search import add_backend_args

    parser = argparse.ArgumentParser(prog="vsearch serve", description="HTTP search service with A/B routing and a web page.")
    parser.add_argument("--model", default=None, help="model folder (without --rollout)")
    parser.add_argument("--alias", default=None, help="Milvus alias (without --rollout)")
    parser.add_argument("--rollout", default=None, help="rollout.yaml: serve both A/B arms (its Milvus unless --milvus-uri)")
    parser.add_argument("--events", default=None, help="impression/click log folder (default with --rollout: events/ beside it)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-upload-bytes", type=int, default=DEFAULT_MAX_UPLOAD_BYTES)
    parser.add_argument("--max-k", type=int, default=DEFAULT_MAX_K)
    parser.add_argument("--champion-from", metavar="REGISTRY", default=None,
                        help="follow this registry's champion: when a promotion or rollback moves --alias to the "
                             "champion's collection, load the champion (into .champions/ beside --model) and swap it in")
    parser.add_argument("--follow-every", type=float, default=10.0, metavar="S", help="seconds between looks (--champion-from)")
    parser.add_argument("--follow-grace", type=float, default=300.0, metavar="S",
                        help="seconds to keep answering from the last verified collection after the alias moved (--champion-from)")
    add_backend_args(parser)
    args = parser.parse_args(argv)
    if not args.rollout and not (args.model and args.alias):
        parser.error("give --model and --alias, or --rollout FILE")
    if args.champion_from and args.rollout:
        parser.error("--champion-from follows one model's alias: not with --rollout (the release moves its arms)")

    import uvicorn

    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import connect

    from vsearch.serving.search import make_hydrator

    cfg = load_index_config(args.index_config, args.overrides)
    milvus_uri = args.milvus_uri
    given = argv if argv is not None else sys.argv[1:]
    if args.rollout:
        from vsearch.rollout.schema import load_rollout

        plan = load_rollout(args.rollout)  # a bad plan: one line, exit 2, before anything starts
        if plan.milvus_uri and not any(a == "--milvus-uri" or a.startswith("--milvus-uri=") for a in given):
            milvus_uri = plan.milvus_uri
    # Then the catalog: bad data stops the start with one line before Milvus or a model is touched.
    hydrator = make_hydrator(args.hydrate, args.data)
    store = connect(milvus_uri, cfg)
    stop = None
    try:
        state = build_state(
            data_dir=args.data, store=store, index_cfg=cfg, model=args.model, alias=args.alias, rollout_path=args.rollout,
            hydrate_spec=args.hydrate, limits=Limits(max_upload_bytes=args.max_upload_bytes, max_k=args.max_k), device=args.device,
            events_dir=args.events, hydrator=hydrator,
        )
        if args.champion_from:
            from vsearch.serving.follow import ChampionFollower

            follower = ChampionFollower(state, args.champion_from, Path(args.model).resolve().parent / ".champions",
                                        grace_s=args.follow_grace, device=args.device)
            stop = follower.start(args.follow_every)
        uvicorn.run(create_app(state), host=args.host, port=args.port, log_level=os.environ.get("VSEARCH_LOG_LEVEL", "info"))
    finally:
        if stop is not None:
            stop.set()
        store.close()
    return 0
