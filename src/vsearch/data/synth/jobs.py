"""Image jobs (run in-process or in a pool; randomness is per item, so the pool never matters)."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
from PIL import Image

from vsearch.data.synth.config import _STREAM_QUERY_IMAGE
from vsearch.data.synth.rendering import render_catalog_image, render_query_image

_WORLD: dict | None = None


def _init_worker(world: dict) -> None:
    global _WORLD
    _WORLD = world


def _write_png(image: Image.Image, path: str) -> None:
    """Write one image; PNG is lossless and carries no timestamp, so bytes are reproducible."""
    image.save(path, format="PNG")


def _render_job(job: tuple[str, int]) -> None:
    kind, index = job
    world = _WORLD
    cfg, seed, root = world["config"], world["seed"], world["root"]
    if kind == "catalog":
        spec = world["specs"][index]
        image = render_catalog_image(spec, cfg)
        path = os.path.join(root, world["catalog_uris"][index])
    else:
        spec = world["specs"][world["query_products"][index]]
        rng = np.random.default_rng([seed, _STREAM_QUERY_IMAGE, index])
        image = render_query_image(world, spec, rng, cfg)
        path = os.path.join(root, world["query_uris"][index])
    _write_png(image, path)


def _render_all(world: dict, jobs: list[tuple[str, int]], workers: int) -> None:
    if workers <= 1:
        _init_worker(world)
        try:
            for job in jobs:
                _render_job(job)
        finally:
            _init_worker(None)
        return
    chunk = max(1, len(jobs) // (workers * 8))
    with multiprocessing.get_context().Pool(workers, initializer=_init_worker, initargs=(world,)) as pool:
        for _ in pool.imap_unordered(_render_job, jobs, chunksize=chunk):
            pass
