"""Probe every image a manifest references: allowed, resolvable, non-empty, within the size and
pixel caps, decodable, big enough, hash. The probe goes through the same input boundary as
training and serving (``schema.resolve_uri``, ``schema.read_uri_bytes``,
``dataset.image_to_rgb``), so validation accepts exactly what they accept.

Runs over all URIs with a process pool (decoding is CPU-bound; PIL holds the GIL for most of
it). A probe never raises: each failure is a status the validation suites check, so one run
reports every bad image instead of stopping at the first.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
import multiprocessing

from vsearch import schema

# Status of one probe, in the order the checks apply (each later one implies the earlier passed).
# The names are the ``kind`` of the boundary's DataError.
OK = "ok"
ESCAPES = "escapes"  # not allowed: outside the data folder, URL not allowed, control characters, symlink loop
MISSING = "missing"
UNREADABLE = "unreadable"  # includes: not a regular file (FIFO, device, directory)
EMPTY = "empty"
TOO_LARGE = "too_large"  # more than schema.MAX_IMAGE_BYTES bytes or schema.MAX_IMAGE_PIXELS pixels
UNDECODABLE = "undecodable"  # includes: a mode that cannot be converted faithfully

# Below this many URIs, probing in-process is faster than starting workers.
POOL_MIN_ITEMS = 256


@dataclass(frozen=True)
class ImageProbe:
    """What we learnt about one URI. ``width``/``height`` in pixels (0 unless decoded);
    ``sha256`` of the file bytes (content hash for duplicate detection; "" if unread)."""

    uri: str
    status: str
    detail: str = ""
    width: int = 0
    height: int = 0
    n_bytes: int = 0
    sha256: str = ""


def probe_image(data_dir: str, uri: str) -> ImageProbe:
    """Read and fully decode one image without raising. Reads only; never writes."""
    from vsearch.data.dataset import image_to_rgb

    try:
        path = schema.resolve_uri(data_dir, uri)
        raw = schema.read_uri_bytes(path, path)
    except schema.DataError as err:
        return ImageProbe(str(uri), err.kind or UNREADABLE, f"{err.rule}" + (f" ({err.detail})" if err.detail else ""))
    digest = hashlib.sha256(raw).hexdigest()
    try:
        width, height = image_to_rgb(raw, path).size
    except schema.DataError as err:
        return ImageProbe(uri, err.kind or UNDECODABLE, err.detail or err.rule, n_bytes=len(raw), sha256=digest)
    return ImageProbe(uri, OK, "", width, height, len(raw), digest)


def _probe_chunk(args: tuple[str, list[str]]) -> list[ImageProbe]:
    data_dir, uris = args
    return [probe_image(data_dir, uri) for uri in uris]


def probe_images(data_dir: str | os.PathLike, uris: Sequence[str], workers: int | None = None) -> dict[str, ImageProbe]:
    """Probe each distinct URI once. ``workers``: processes (None: min(2, cpus); 1: in-process).

    Returns:
        uri -> ImageProbe for every distinct URI in ``uris``.
    """
    data_dir = str(data_dir)
    distinct = list(dict.fromkeys(u for u in uris if isinstance(u, str)))
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if workers <= 1 or len(distinct) < POOL_MIN_ITEMS:
        return {p.uri: p for p in _probe_chunk((data_dir, distinct))}
    # Chunks of ~64 URIs amortise the inter-process round trip. Fork starts workers in
    # milliseconds (spawn re-imports pandas: ~1.5 s per worker, more than probing 3k small
    # images takes); workers only read files and call PIL/hashlib.
    size = 64
    chunks = [(data_dir, distinct[i : i + size]) for i in range(0, len(distinct), size)]
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    out: dict[str, ImageProbe] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for probes in pool.map(_probe_chunk, chunks):
            out.update((p.uri, p) for p in probes)
    return out
