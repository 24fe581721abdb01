"""The generated street-to-shop benchmark: clean catalog renders and cluttered street queries.

A *design* is (category silhouette, pattern, brand); a *product* is one design in one colour,
so every design has several colour variants and a reformulation such as "in red" has a
target. Catalog images show the product clean, centred, at a fixed scale on white. Query
("street") images show the same product at a random scale, position and rotation, partly
occluded, under jittered lighting, on a background whose regions carry the patterns and
colours of *other* products (other categories, often the same pattern or colour): a model
that matches local texture instead of the object retrieves the wrong category.

The output is exactly the layout real data uses (see ``vsearch.schema``)::

    out_dir/
      catalog.parquet          product_id, image_uri, title, category, brand, colour, pattern, design_id
      interactions.parquet     query_id, query_image_uri, query_text, product_id, event_timestamp, split
      reformulations.parquet   query_image_uri, reformulation_text, product_id   (test split only)
      images/catalog/<product_id>.png
      images/queries/<query_id>.png
      synth_config.json        preset name, seed and every SynthConfig field

Splits are assigned by design: all colour variants of a design share one split, so test
products (and their siblings) are never seen in training. Parameters of the presets were
fixed before any model was trained (docs/benchmark.md); never tune them to flatter a model.

Everything is a pure function of (config, seed). Each image draws its randomness from its own
``np.random.default_rng([seed, stream, index])``, so the number of worker processes never
changes a pixel, and the same preset and seed give byte-identical files.

Modules, one per stage of the generator: `config` (`SynthConfig`, `PRESETS`, the output
layout), `world` (categories, patterns, colours, brands), `rendering` (catalog and street
images), `jobs` (rendering in-process or in a pool), `planning` (products, texts and the
interaction log) and `generator` (`generate` and the CLI). Import from this package.
"""

from vsearch.data.synth.config import CATALOG_IMAGE_DIR, CONFIG_FILE, GENERATOR_VERSION, PRESETS, QUERY_IMAGE_DIR, SynthConfig, add_benchmark_arguments
from vsearch.data.synth.generator import generate, main
from vsearch.data.synth.rendering import render_catalog_image, render_query_image
from vsearch.data.synth.world import BRANDS, CATEGORIES, COLOURS, PATTERNS, Brand, Category, Colour, Pattern

__all__ = [
    "BRANDS", "CATALOG_IMAGE_DIR", "CATEGORIES", "COLOURS", "CONFIG_FILE", "GENERATOR_VERSION", "PATTERNS", "PRESETS",
    "QUERY_IMAGE_DIR", "Brand", "Category", "Colour", "Pattern", "SynthConfig", "add_benchmark_arguments", "generate", "main",
    "render_catalog_image", "render_query_image",
]
