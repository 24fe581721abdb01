"""The HTTP search service (FastAPI + uvicorn) with A/B routing and a small web page.

``vsearch serve --model DIR --alias NAME --data DIR`` serves one model; ``--rollout FILE``
routes each request by user id (form field ``user_id`` or header ``X-User-Id``; anonymous
users get the control) to the variant's model + alias. Encoders are loaded once per variant.

Endpoints:
- ``POST /search`` multipart: ``image`` (file), ``text`` (optional reformulation), ``k``
  (default 10), ``user_id`` (optional) -> JSON ``{variant, model_version, alias, results}``.
  Bad input gets a 4xx JSON ``{"error": message}``: not an image / corrupt (400), too large
  (413), wrong content type (415), k out of range / text too long / missing field (422).
- ``GET /healthz`` (process up), ``GET /readyz`` (models loaded, aliases resolvable and
  their collections loaded; 503 otherwise).
- ``GET /`` the search page; ``GET /products/{id}/image`` a catalog image, only from files
  under the data folder.
"""


import argparse
import os
import time
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

    def route(self, user_id: str | None) -> str:
        if self.rollout is None:
            return next(iter(self.searchers))
        if not user_id:
            return "control"
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
) -> ServiceState:
    """Load the encoders (once per distinct model + alias) and resolve every alias."""
    from vsearch.serving.search import make_hydrator

    rollout = None
    if rollout_path:
        from vsearch.rollout.schema import load_rollout

        rollout = load_rollout(rollout_path)
        wanted = {name: (v.model.uri, v.milvus_alias) for name, v in rollout.variants().items()}
    else:
        if not (model and alias):
            raise ValueError("give --model and --alias, or --rollout FILE")
        wanted = {"default": (model, alias)}
    loaded: dict[tuple[str, str], Searcher] = {}
    searchers = {}
    for name, key in wanted.items():
        if key not in loaded:
            loaded[key] = Searcher(key[0], key[1], store, index_cfg, device=device)
            loaded[key].prepare()
        searchers[name] = loaded[key]
    return ServiceState(searchers, make_hydrator(hydrate_spec, data_dir), str(data_dir), rollout, limits or Limits())


def create_app(state: ServiceState):
    """The FastAPI application over a built :class:`ServiceState`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="vsearch", docs_url=None, redoc_url=None)
    app.state.vsearch = state
    page = (resources.files("vsearch.serving") / "static" / "index.html").read_text()
    limits = state.limits

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        return error(exc.status_code, str(exc.detail))

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        checks = {}
        for name, searcher in state.searchers.items():
            ok, detail = searcher.ready()
            checks[name] = {"ready": ok, "detail": detail, "model_version": searcher.version}
        ready = all(c["ready"] for c in checks.values())
        return JSONResponse({"ready": ready, "variants": checks}, status_code=200 if ready else 503)

    @app.get("/", response_class=HTMLResponse)
    def index():
        return HTMLResponse(page)

    @app.get("/products/{product_id}/image")
    def product_image(product_id: str):
        from vsearch import schema
        from vsearch.schema import DataError

        row = state.hydrator.lookup([product_id]).get(product_id)
        if row is None:
            return error(404, f"unknown product '{product_id}'")
        uri = row.get("image_uri", "")
        try:
            path = schema.resolve_uri(state.data_dir, uri)  # refuses anything outside the data folder
        except DataError as err:
            return error(404, f"image of '{product_id}' is not served: {err.rule}")
        if "://" in path or not Path(path).is_file():
            return error(404, f"image of '{product_id}' is not a local file under the data folder")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})

    @app.post("/search")
    async def search(request: Request):
        started = time.perf_counter()
        try:
            content_type = request.headers.get("content-type", "")
            if not content_type.startswith("multipart/form-data"):
                raise QueryError(415, f"send multipart/form-data with an 'image' file, not '{content_type or 'no content type'}'")
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > limits.max_upload_bytes + _ENVELOPE_BYTES:
                raise QueryError(413, f"image too large: request of {int(length)} bytes (limit {limits.max_upload_bytes} bytes)")
            try:
                form = await request.form(max_files=1, max_fields=10, max_part_size=64 * 1024)
            except Exception as err:  # malformed multipart, too many parts
                raise QueryError(400, f"malformed multipart form: {getattr(err, 'detail', err)}") from err
            upload = form.get("image")
            if upload is None:
                raise QueryError(422, "missing form field 'image' (the photo to search with)")
            if not isinstance(upload, UploadFile):
                raise QueryError(422, "form field 'image' must be a file upload")
            upload_type = (upload.content_type or "").split(";")[0].strip().lower()
            if upload_type not in ALLOWED_CONTENT_TYPES:
                raise QueryError(415, f"wrong content type '{upload_type or 'none'}' for 'image'; send one of {', '.join(ALLOWED_CONTENT_TYPES)}")
            raw = await upload.read(limits.max_upload_bytes + 1)  # never more than the limit + 1
            k = check_k(form.get("k", "10"), limits.max_k)
            text = check_text(form.get("text", ""), limits.max_text_chars)
            image = decode_query_image(raw, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_pixels)
        except QueryError as err:
            return error(err.status, err.message)
        user_id = str(form.get("user_id") or request.headers.get("x-user-id") or "")
        variant = state.route(user_id)
        searcher = state.searchers[variant]
        try:
            hits, used = await run_in_threadpool(searcher.query, image, text, k)
            results = hydrate(hits, state.hydrator)
        except Exception as err:  # noqa: BLE001 - backend trouble is a 503, not a 500
            return error(503, f"search backend unavailable: {type(err).__name__}: {err}")
        for r in results:
            r["image_url"] = f"/products/{r['product_id']}/image"
        return {
            "variant": variant,
            "user_id": user_id or None,
            "model_version": searcher.version,
            "alias": searcher.alias,
            "text_used": used,
            "k": k,
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
            "results": results,
        }

    return app


def main(argv: list[str] | None = None) -> int:
    """``vsearch serve --model DIR --alias NAME --data DIR [--rollout FILE] [--host 127.0.0.1] [--port 8000]``."""
    from vsearch.serving.search import add_backend_args

    parser = argparse.ArgumentParser(prog="vsearch serve", description="HTTP search service with A/B routing and a web page.")
    parser.add_argument("--model", default=None, help="model folder (without --rollout)")
    parser.add_argument("--alias", default=None, help="Milvus alias (without --rollout)")
    parser.add_argument("--rollout", default=None, help="rollout.yaml: route users to control / treatment")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-upload-bytes", type=int, default=DEFAULT_MAX_UPLOAD_BYTES)
    parser.add_argument("--max-k", type=int, default=DEFAULT_MAX_K)
    add_backend_args(parser)
    args = parser.parse_args(argv)
    if not args.rollout and not (args.model and args.alias):
        parser.error("give --model and --alias, or --rollout FILE")

    import uvicorn

    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import connect

    cfg = load_index_config(args.index_config, args.overrides)
    store = connect(args.milvus_uri, cfg)
    try:
        state = build_state(
            data_dir=args.data, store=store, index_cfg=cfg, model=args.model, alias=args.alias, rollout_path=args.rollout,
            hydrate_spec=args.hydrate, limits=Limits(max_upload_bytes=args.max_upload_bytes, max_k=args.max_k), device=args.device,
        )
        uvicorn.run(create_app(state), host=args.host, port=args.port, log_level=os.environ.get("VSEARCH_LOG_LEVEL", "info"))
    finally:
        store.close()
    return 0
