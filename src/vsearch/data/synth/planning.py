"""Planning the world, the texts and the log (main process, cheap)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from vsearch.data.synth.config import (
    _STREAM_QUERY_TEXT,
    _STREAM_REFORM,
    _STREAM_TITLE,
    _STREAM_WORLD,
    CATALOG_IMAGE_DIR,
    QUERY_IMAGE_DIR,
    SynthConfig,
    _split_counts,
)
from vsearch.data.synth.world import _NOISE_WORDS, _REFORMULATIONS, BRANDS, CATEGORIES, COLOURS, PATTERNS, _colour_base





def _word(rng: np.random.Generator, main: str, synonyms: tuple[str, ...], p: float) -> str:
    return synonyms[rng.integers(len(synonyms))] if synonyms and rng.random() < p else main


def _title(rng: np.random.Generator, spec: dict, cfg: SynthConfig) -> str:
    """A catalog title: category always named; brand, colour and pattern usually; noise words."""
    cat, pat, col = CATEGORIES[spec["category"]], PATTERNS[spec["pattern_index"]], COLOURS[spec["colour_index"]]
    words = {
        "category": _word(rng, cat.synonyms[0], cat.synonyms[1:], cfg.synonym_prob),
        "pattern": _word(rng, pat.words[0], pat.words[1:], cfg.synonym_prob),
        "colour": _word(rng, col.name, col.synonyms, cfg.synonym_prob),
        "brand": BRANDS[spec["brand"]].name,
    }
    # "zebra print", but not "zebra print print" or "plain print".
    plain = pat.name == "solid" or words["pattern"].endswith("print")
    words["pattern_print"] = words["pattern"] if plain else words["pattern"] + " print"
    present = {k: k == "category" or rng.random() < cfg.title_attribute_prob for k in words}
    templates = (
        (("brand", "{brand}"), ("colour", "{colour}"), ("pattern", "{pattern}"), ("category", "{category}")),
        (("pattern", "{pattern}"), ("category", "{category}"), ("colour", "in {colour}"), ("brand", "by {brand}")),
        (("brand", "{brand} -"), ("category", "{category}"), ("pattern", "{pattern}"), ("colour", "{colour}")),
        (("colour", "{colour}"), ("pattern", "{pattern}"), ("category", "{category}"), ("brand", "| {brand}")),
        (("category", "{category}"), ("colour", "{colour},"), ("pattern", "{pattern_print},"), ("brand", "{brand}")),
    )
    parts = [text.format(**words) for key, text in templates[rng.integers(len(templates))] if present[key]]
    n_noise = int(rng.integers(0, cfg.title_noise_words_max + 1))
    for noise in rng.choice(len(_NOISE_WORDS), size=n_noise, replace=False):
        word = _NOISE_WORDS[int(noise)]
        if rng.random() < 0.5:
            parts.insert(0, word)
        else:
            parts.append(word)
    title = " ".join(parts).strip(" ,|-")
    if rng.random() < 0.5:
        title = title.title()
    return title


def _query_text(rng: np.random.Generator, spec: dict, cfg: SynthConfig) -> str:
    """A short typed query ("striped mug", "red zebra bag"), or empty."""
    if rng.random() < cfg.empty_query_text_fraction:
        return ""
    cat, pat, col = CATEGORIES[spec["category"]], PATTERNS[spec["pattern_index"]], COLOURS[spec["colour_index"]]
    c = _word(rng, cat.synonyms[0], cat.synonyms[1:], cfg.synonym_prob / 2)
    p = _word(rng, pat.words[0], pat.words[1:], cfg.synonym_prob / 2)
    k = _word(rng, col.name, col.synonyms, cfg.synonym_prob / 2)
    b = BRANDS[spec["brand"]].name.lower()
    options = (f"{p} {c}", f"{k} {c}", f"{k} {p} {c}", c, f"{b} {c}", f"{b} {k} {c}")
    return options[rng.choice(len(options), p=(0.25, 0.25, 0.25, 0.1, 0.08, 0.07))]


def _plan(cfg: SynthConfig, seed: int) -> dict:
    """Designs, products, titles, queries, splits and reformulations; no images yet.

    Long because: one seeded stream draws everything in a fixed order that pins the dataset.
    """
    rng = np.random.default_rng([seed, _STREAM_WORLD])
    combos = cfg.n_categories * cfg.n_patterns * cfg.n_brands
    chosen = np.sort(rng.choice(combos, size=cfg.n_designs, replace=False))
    n_train, n_val, _ = _split_counts(cfg.n_designs, cfg.split_fractions)
    order = rng.permutation(cfg.n_designs)
    design_split = np.empty(cfg.n_designs, dtype=object)
    design_split[order[:n_train]] = "train"
    design_split[order[n_train:n_train + n_val]] = "val"
    design_split[order[n_train + n_val:]] = "test"

    specs, rows = [], []
    for d, combo in enumerate(chosen):
        cat, rest = divmod(int(combo), cfg.n_patterns * cfg.n_brands)
        pat, brand = divmod(rest, cfg.n_brands)
        freq = PATTERNS[pat].frequency * (1 + rng.uniform(-cfg.pattern_scale_jitter, cfg.pattern_scale_jitter))
        phase, salt = float(rng.uniform(0, 1)), int(rng.integers(1, 2**20))
        for col in sorted(rng.choice(cfg.n_colours, size=cfg.colours_per_design, replace=False).tolist()):
            jitter = rng.integers(-cfg.colour_jitter, cfg.colour_jitter + 1, size=3)
            rgb = tuple(int(c) for c in np.clip(np.asarray(COLOURS[col].rgb) + jitter, 0, 255))
            specs.append({
                "category": cat, "pattern": PATTERNS[pat].name, "pattern_index": pat, "colour_index": col,
                "brand": brand, "rgb": rgb, "base": _colour_base(COLOURS[col].rgb),
                "freq": float(freq), "phase": phase, "salt": salt, "design": d,
            })
            rows.append((f"p{len(specs) - 1:05d}", f"d{d:04d}", design_split[d]))

    product_ids = [r[0] for r in rows]
    titles = [_title(np.random.default_rng([seed, _STREAM_TITLE, i]), s, cfg) for i, s in enumerate(specs)]
    catalog = pd.DataFrame({
        "product_id": product_ids,
        "image_uri": [f"{CATALOG_IMAGE_DIR}/{pid}.png" for pid in product_ids],
        "title": titles,
        "category": [CATEGORIES[s["category"]].name for s in specs],
        "brand": [BRANDS[s["brand"]].name for s in specs],
        "colour": [COLOURS[s["colour_index"]].name for s in specs],
        "pattern": [s["pattern"] for s in specs],
        "design_id": [r[1] for r in rows],
    })

    # Engagement log: 1 + Poisson(mean - 1) queries per product, uniform over the window.
    counts = 1 + rng.poisson(cfg.mean_queries_per_product - 1, size=len(specs))
    query_products = np.repeat(np.arange(len(specs)), counts)
    seconds = rng.integers(0, cfg.window_days * 86400, size=len(query_products))
    order = np.lexsort((query_products, seconds))  # by time; ties broken by product for determinism
    query_products, seconds = query_products[order], seconds[order]
    query_ids = [f"q{i:06d}" for i in range(len(query_products))]
    start = pd.Timestamp(cfg.start_date, tz="UTC")
    interactions = pd.DataFrame({
        "query_id": query_ids,
        "query_image_uri": [f"{QUERY_IMAGE_DIR}/{qid}.png" for qid in query_ids],
        "query_text": [_query_text(np.random.default_rng([seed, _STREAM_QUERY_TEXT, i]), specs[p], cfg)
                       for i, p in enumerate(query_products)],
        "product_id": [product_ids[p] for p in query_products],
        "event_timestamp": (start + pd.to_timedelta(seconds, unit="s")).astype("datetime64[us, UTC]"),
        "split": [rows[p][2] for p in query_products],
    })

    # Reformulations (test split only): a street photo of P + "in <colour>" -> P's sibling in that colour.
    rrng = np.random.default_rng([seed, _STREAM_REFORM])
    by_design: dict[int, list[int]] = {}
    for i, s in enumerate(specs):
        by_design.setdefault(s["design"], []).append(i)
    queries_of: dict[int, list[int]] = {}
    for q, p in enumerate(query_products):
        queries_of.setdefault(int(p), []).append(q)
    ref_rows = []
    for p, spec in enumerate(specs):
        if rows[p][2] != "test":
            continue
        siblings = [s for s in by_design[spec["design"]] if s != p]
        n = min(cfg.reformulations_per_product, len(siblings))
        for target in sorted(rrng.choice(siblings, size=n, replace=False).tolist()) if n else []:
            colour = COLOURS[specs[target]["colour_index"]]
            word = _word(rrng, colour.name, colour.synonyms, cfg.synonym_prob / 2)
            text = _REFORMULATIONS[rrng.integers(len(_REFORMULATIONS))].format(c=word)
            q = queries_of[p][rrng.integers(len(queries_of[p]))]
            ref_rows.append((interactions["query_image_uri"].iloc[q], text, product_ids[target]))
    reformulations = pd.DataFrame(ref_rows, columns=["query_image_uri", "reformulation_text", "product_id"])
    reformulations = reformulations.astype(object)

    world = {
        "specs": specs,
        "categories": np.asarray([s["category"] for s in specs]),
        "patterns": np.asarray([s["pattern_index"] for s in specs]),
        "colours": np.asarray([s["colour_index"] for s in specs]),
        "query_products": query_products.tolist(),
        "catalog_uris": catalog["image_uri"].tolist(),
        "query_uris": interactions["query_image_uri"].tolist(),
    }
    return {"catalog": catalog, "interactions": interactions, "reformulations": reformulations, "world": world}
