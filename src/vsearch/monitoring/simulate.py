"""Simulated windows for demos, tests and the false-alarm benchmark.

`shifted_copy` makes "the world moved": a new category mix (only some categories remain),
a colour / brightness shift of the street photos (a new phone camera pipeline, a season),
and longer titles. A same-distribution window is simply another seed of the same
benchmark preset (``vsearch data synth --seed N``), or a resample of one window.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from vsearch import artifacts, schema


def shifted_copy(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    colour_gain: tuple[float, float, float] = (1.25, 1.0, 0.7),
    brightness: float = 1.15,
    keep_categories: int | None = None,
    title_extra_words: int = 3,
    shift_catalog_images: bool = True,
) -> Path:
    """Copy a data folder with a distribution shift; published atomically to ``dst``.

    Args:
        colour_gain: per-channel gain (R, G, B) applied to every query photo (and, with
            ``shift_catalog_images``, to every catalog image: a new collection's palette).
        brightness: overall gain applied after the colour gain.
        keep_categories: keep only the first n categories (sorted) of the catalog (and their
            queries): a new category mix. Default: half of them (at least one).
        title_extra_words: words appended to every title ("new season sale ...").
    """
    from PIL import Image

    catalog, interactions, reformulations = schema.read_dataset(src)
    categories = sorted(catalog["category"].unique())
    keep = set(categories[: max(1, keep_categories if keep_categories is not None else len(categories) // 2)])
    catalog = catalog[catalog["category"].isin(keep)].reset_index(drop=True)
    products = set(catalog["product_id"])
    interactions = interactions[interactions["product_id"].isin(products)].reset_index(drop=True)
    reformulations = reformulations[reformulations["product_id"].isin(products)].reset_index(drop=True)
    words = ["new", "season", "sale", "limited", "edition", "bestseller"]
    catalog["title"] = catalog["title"] + " " + " ".join(words[i % len(words)] for i in range(title_extra_words))

    out = Path(dst)
    gain = np.asarray(colour_gain, np.float32) * float(brightness)
    with artifacts.staged(out) as staging:
        def copy(uri: str, shift: bool) -> None:
            source = Path(schema.resolve_uri(src, uri))
            target = staging / uri
            target.parent.mkdir(parents=True, exist_ok=True)
            if not shift:
                shutil.copyfile(source, target)
                return
            with Image.open(source) as im:
                pixels = np.asarray(im.convert("RGB"), np.float32) * gain
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(target)

        for uri in catalog["image_uri"]:
            copy(uri, shift=shift_catalog_images)
        for uri in set(interactions["query_image_uri"]) | set(reformulations["query_image_uri"]):
            copy(uri, shift=True)
        catalog.to_parquet(staging / schema.CATALOG_FILE, index=False)
        interactions.to_parquet(staging / schema.INTERACTIONS_FILE, index=False)
        reformulations.to_parquet(staging / schema.REFORMULATIONS_FILE, index=False)
    return out
