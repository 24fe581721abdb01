"""Query-side search: decode a photo, encode it (fused with reformulation text), search Milvus
through an alias, hydrate the hits. Shared by ``vsearch search`` and the HTTP service.

``vsearch search --image PATH [--text "in red"] [-k 10] --model DIR --alias NAME --data DIR``
prints the results as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vsearch import schema

ALLOWED_CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp")
DEFAULT_MAX_UPLOAD_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_PIXELS = schema.MAX_IMAGE_PIXELS  # the same pixel cap as validate and train
DEFAULT_MAX_TEXT_CHARS = 200
DEFAULT_MAX_K = 100


class QueryError(ValueError):
    """A bad query (upload, text, k): ``status`` is the HTTP status to answer with (4xx)."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


# ---------------------------------------------------------------------------------- input checks
def decode_query_image(raw: bytes, *, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Bytes of an uploaded photo -> RGB PIL image, or QueryError (400 / 413) saying why.

    The size limit is checked before decoding; the pixel count is read from the header before
    the pixels are decoded (no decompression bombs).
    """
    from PIL import Image, UnidentifiedImageError

    if not raw:
        raise QueryError(400, "empty upload: the image file has 0 bytes")
    if len(raw) > max_bytes:
        raise QueryError(413, f"image too large: more than {max_bytes} bytes")
    try:
        img = Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError as err:
        raise QueryError(413, f"image too large: {err}") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise QueryError(400, f"not an image: the file could not be identified as an image ({type(err).__name__})") from err
    width, height = img.size
    if width * height > max_pixels:
        raise QueryError(413, f"image too large: {width}x{height} pixels (limit {max_pixels} pixels)")
    from vsearch.data.dataset import to_rgb  # the same mode handling as training (16-bit, alpha)

    try:
        img.load()
        return to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise QueryError(400, f"corrupt image: the {img.format or 'image'} data could not be decoded ({err})") from err


def check_text(text: str | None, max_chars: int = DEFAULT_MAX_TEXT_CHARS) -> str:
    text = (text or "").strip()
    if len(text) > max_chars:
        raise QueryError(422, f"text too long: {len(text)} characters (limit {max_chars})")
    return text


def check_k(k, max_k: int = DEFAULT_MAX_K) -> int:
    try:
        value = int(str(k).strip())
    except (TypeError, ValueError):
        raise QueryError(422, f"k must be an integer between 1 and {max_k}, got {k!r}") from None
    if not 1 <= value <= max_k:
        raise QueryError(422, f"k out of range: {value} (must be between 1 and {max_k})")
    return value


# ---------------------------------------------------------------------------------- hydration
class CatalogHydrator:
    """title / category / image_uri per product from the catalog parquet, read once."""

    def __init__(self, data_dir: str | os.PathLike):
        catalog = schema.read_manifest(data_dir, schema.CATALOG_FILE)
        self._rows = {
            r.product_id: {"title": r.title, "image_uri": r.image_uri, "category": r.category} for r in catalog.itertuples()
        }

    def lookup(self, product_ids: list[str]) -> dict[str, dict]:
        return {p: self._rows[p] for p in product_ids if p in self._rows}


class FeastHydrator:
    """Product features through the Feast online store (``vsearch.features.online``)."""

    def __init__(self, repo_path: str):
        from vsearch.features.online import lookup_products  # lazy: feast is heavy and optional

        self.repo_path, self._lookup = repo_path, lookup_products

    def lookup(self, product_ids: list[str]) -> dict[str, dict]:
        return self._lookup(self.repo_path, product_ids)


def make_hydrator(spec: str, data_dir: str | os.PathLike):
    """``catalog`` (default) or ``feast:<repo_path>``."""
    if spec == "catalog":
        return CatalogHydrator(data_dir)
    if spec.startswith("feast:") and spec[6:]:
        return FeastHydrator(spec[6:])
    raise ValueError(f"--hydrate must be 'catalog' or 'feast:<repo_path>', got {spec!r}")


# ---------------------------------------------------------------------------------- searcher
@dataclass
class Hit:
    product_id: str
    score: float
    category: str


class Searcher:
    """One model (encoders loaded once) searching one Milvus alias.

    ``query(image, text, k)`` -> (hits best first, whether the text was used). Scores are
    inner products of unit vectors (cosine similarity; higher is closer).
    """

    def __init__(self, model_dir: str | os.PathLike, alias: str, store, index_cfg, device: str = "cpu"):
        from vsearch.artifacts import model_version
        from vsearch.data.dataset import Collator
        from vsearch.models.multitower import load_model

        self.model_dir, self.alias, self.store, self.cfg = str(model_dir), alias, store, index_cfg
        self.version = model_version(model_dir)
        self.model, self.tokenizer = load_model(model_dir, device=device)
        self.model.eval()
        self.device = device
        self._images = Collator([], mean=self.model.cfg.image_mean, std=self.model.cfg.image_std)
        self._texts = Collator([], self.tokenizer, self.model.cfg.max_text_length) if self.tokenizer is not None else None
        self._lock = threading.Lock()  # one forward at a time: the CPU threads are already all busy
        # Seconds this searcher may keep its last verified collection after the alias moved to
        # another model's (0: refuse at once); set by a champion follower. moved_since: when it saw that.
        self.pin_grace_s, self.moved_since = 0.0, None

    @property
    def uses_text(self) -> bool:
        return self.model.has_text and self._texts is not None

    def collection(self) -> str | None:
        return self.store.alias_target(self.alias)

    def check(self, *, max_age_s: float = 0.0) -> str:
        """The collection behind the alias, if this model built it (re-resolved after ``max_age_s``).

        Raises:
            vsearch.indexing.store.IndexError_: the alias does not exist, or
            EmbeddingSpaceMismatch: the collection was built by another model (an alias moved
            under a running service, e.g. by a promotion): its vectors are in another space.
        """
        from vsearch.indexing.store import EmbeddingSpaceMismatch

        now = time.monotonic()
        checked = getattr(self, "_checked", None)
        if checked is not None and now - checked[1] < max_age_s:
            return checked[0]
        dim = int(self.model.cfg.embed_dim)
        try:
            target = self.store.check_embedding_space(self.alias, self.version, dim)
            self.moved_since = None
        except EmbeddingSpaceMismatch:
            # Following the champion (vsearch.serving.follow): the alias moved to another model's
            # collection; until the new champion is loaded, answer with the pair last verified
            # (this model on its own collection, checked again here), for at most pin_grace_s.
            if not self.pin_grace_s or checked is None:
                raise
            self.moved_since = self.moved_since or now
            if now - self.moved_since > self.pin_grace_s:
                raise
            target = self.store.check_embedding_space(checked[0], self.version, dim)
        self._checked = (target, now)
        return target

    def prepare(self) -> None:
        """Resolve the alias, check the model built its collection, load it (IndexError_ otherwise)."""
        self.store.ensure_loaded(self.check())

    def ready(self) -> tuple[bool, str]:
        try:
            target = self.check()
            state = str(self.store.client.get_load_state(target).get("state"))
            pinned = f" (the alias has moved: serving {target} until the champion follows)" if self.moved_since else ""
            return state.endswith("Loaded"), f"alias '{self.alias}' -> {target}, built by {self.version} ({state.split('.')[-1]}){pinned}"
        except Exception as err:  # noqa: BLE001 - readiness reports, never raises
            from vsearch.indexing.store import IndexError_

            if isinstance(err, IndexError_):
                return False, str(err)
            return False, f"Milvus unavailable: {type(err).__name__}: {err}"

    def encode(self, image, text: str = "") -> tuple[np.ndarray, bool]:
        """PIL RGB image (+ text) -> (D,) unit query vector, and whether text was fused in."""
        import torch

        from vsearch.models.multitower import fuse

        size = self.model.cfg.image_size
        if image.size != (size, size):
            from PIL import Image

            image = image.resize((size, size), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)[None]
        with self._lock, torch.inference_mode():
            features = self.model.encode_image(self._images.normalize(pixels).to(self.device))
            use_text = bool(text) and self.uses_text
            if use_text:
                tokens = self._texts.tokenize([text])
                text_features = self.model.encode_text(**{k: v.to(self.device) for k, v in tokens.items()})
                features = fuse(features, text_features, self.model.cfg.fusion_text_weight)
        vector = features[0].float().cpu().numpy()
        if not np.isfinite(vector).all():
            raise RuntimeError("query embedding is NaN/inf")
        return vector, use_text

    def search(self, vector: np.ndarray, k: int, collection: str) -> list[Hit]:
        """Top ``k`` hits of a (D,) unit query vector in ``collection`` (the one `check` verified)."""
        from vsearch.indexing.store import CATEGORY, hit_id

        res = self.store.search(collection, [vector], k, self.cfg.search, self.cfg.index.metric, output_fields=[CATEGORY])
        return [Hit(str(hit_id(h)), float(h["distance"]), h.get(CATEGORY) or "") for h in res[0]]

    def query(self, image, text: str, k: int) -> tuple[list[Hit], bool]:
        # The alias is re-checked every few seconds, and the search goes to the collection that
        # check verified, not through the alias: an alias moved under a running service (a
        # promotion) reaches this model only through a new check (which refuses another model's
        # collection), so its query vectors never meet another model's vectors in between.
        target = self.check(max_age_s=5.0)
        vector, used = self.encode(image, text)
        return self.search(vector, k, collection=target), used


def hydrate(hits: list[Hit], hydrator) -> list[dict]:
    info = hydrator.lookup([h.product_id for h in hits])
    out = []
    for h in hits:
        row = info.get(h.product_id, {})
        out.append(
            {
                "product_id": h.product_id,
                "score": round(h.score, 6),
                "title": row.get("title", ""),
                "category": row.get("category", h.category),
                "image_uri": row.get("image_uri", ""),
            }
        )
    return out


# ---------------------------------------------------------------------------------- CLI
def add_backend_args(p: argparse.ArgumentParser) -> None:
    from vsearch.indexing.cli import DEFAULT_URI

    p.add_argument("--milvus-uri", default=DEFAULT_URI, help=f"Milvus Lite .db path or http://host:port (default {DEFAULT_URI})")
    p.add_argument("--data", required=True, help="dataset folder (catalog for hydration, product images)")
    p.add_argument("--hydrate", default="catalog", help="catalog (default) | feast:<repo_path>")
    p.add_argument("--index-config", default=None, help="index YAML (default: the packaged configs/index.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--device", default="cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vsearch search", description="Search the index with a photo (+ reformulation text).")
    parser.add_argument("--image", required=True, help="query photo")
    parser.add_argument("--text", default="", help='reformulation text, e.g. "in red"')
    parser.add_argument("-k", default=10, help="results to return")
    parser.add_argument("--model", required=True, help="model folder whose encoders built the index")
    parser.add_argument("--alias", required=True, help="Milvus alias (or collection) to search")
    add_backend_args(parser)
    args = parser.parse_args(argv)

    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import connect

    try:
        k, text = check_k(args.k), check_text(args.text)
        path = Path(args.image)
        if not path.is_file():
            raise QueryError(400, f"{path}: image file not found")
        image = decode_query_image(path.read_bytes())
    except QueryError as err:
        print(f"vsearch search: error: {err.message}", file=sys.stderr)
        return 2
    cfg = load_index_config(args.index_config, args.overrides)
    hydrator = make_hydrator(args.hydrate, args.data)
    with connect(args.milvus_uri, cfg) as store:
        from vsearch.indexing.store import IndexError_

        searcher = Searcher(args.model, args.alias, store, cfg, device=args.device)
        try:
            searcher.prepare()
        except IndexError_ as err:  # no such alias, or a collection another model built
            print(f"vsearch search: error: {err}", file=sys.stderr)
            return 2
        start = time.perf_counter()
        hits, used = searcher.query(image, text, k)
        took = (time.perf_counter() - start) * 1000
        print(json.dumps({"model_version": searcher.version, "alias": args.alias, "collection": searcher.collection(),
                          "text_used": used, "took_ms": round(took, 2), "results": hydrate(hits, hydrator)}, indent=2))
    return 0
