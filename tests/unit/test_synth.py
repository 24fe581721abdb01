"""The generated street-to-shop benchmark (tiny preset): contract, determinism, splits, atomicity."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vsearch import schema
from vsearch.data import synth
from vsearch.data.synth import jobs, planning, rendering

TINY = synth.PRESETS["tiny"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "tiny"
    synth.generate(out, "tiny", seed=0, workers=1)
    return out


@pytest.fixture(scope="module")
def tiny_data(tiny_dir):
    return schema.read_dataset(tiny_dir)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _colour_named(text: str) -> set[str]:
    """Colour names mentioned in ``text`` (main word or synonym), as main names."""
    found = set()
    for colour in synth.COLOURS:
        for word in (colour.name, *colour.synonyms):
            if re.search(rf"\b{re.escape(word)}\b", text.lower()):
                found.add(colour.name)
    return found


# --- contract -------------------------------------------------------------------------------


def test_output_passes_the_schema_and_has_no_leakage(tiny_dir, tiny_data):
    catalog, interactions, reformulations = tiny_data
    splits = schema.product_splits(interactions)  # raises on leakage
    assert set(splits) == set(catalog["product_id"]), "every product needs an interaction and so a split"
    assert set(splits.values()) == set(schema.SPLITS)
    assert len(catalog) == TINY.n_designs * TINY.colours_per_design
    assert catalog["design_id"].nunique() == TINY.n_designs
    assert {"brand", "colour", "pattern", "design_id"} <= set(catalog.columns)
    assert isinstance(interactions["event_timestamp"].dtype, pd.DatetimeTZDtype)
    assert str(interactions["event_timestamp"].dt.tz) == "UTC"
    assert len(reformulations) > 0
    for uri in [*catalog["image_uri"], *interactions["query_image_uri"]]:
        assert not Path(uri).is_absolute() and (tiny_dir / uri).is_file(), uri
    assert all(uri.startswith("images/catalog/") for uri in catalog["image_uri"])
    assert all(uri.startswith("images/queries/") for uri in interactions["query_image_uri"])


def test_config_record_has_every_parameter_the_preset_and_the_seed(tiny_dir):
    record = json.loads((tiny_dir / synth.CONFIG_FILE).read_text())
    assert record["preset"] == "tiny" and record["seed"] == 0
    assert set(record["config"]) == {f.name for f in dataclasses.fields(synth.SynthConfig)}
    assert record["config"]["n_designs"] == TINY.n_designs
    assert record["config"]["split_fractions"] == list(TINY.split_fractions)


def test_summary_counts_match_the_files(tmp_path):
    summary = synth.generate(tmp_path / "d", "tiny", seed=5)
    catalog, interactions, reformulations = schema.read_dataset(tmp_path / "d")
    assert summary["products"] == len(catalog) and summary["designs"] == TINY.n_designs
    assert summary["queries"] == interactions["split"].value_counts().reindex(schema.SPLITS, fill_value=0).to_dict()
    assert sum(summary["products_per_split"].values()) == len(catalog)
    assert summary["reformulations"] == len(reformulations)
    assert summary["images"] == len(catalog) + len(interactions)
    assert summary["seed"] == 5 and summary["seconds"] >= 0


def test_every_product_has_at_least_one_query_and_unique_query_ids(tiny_data):
    catalog, interactions, _ = tiny_data
    assert interactions["query_id"].is_unique
    per_product = interactions.groupby("product_id").size()
    assert per_product.reindex(catalog["product_id"]).min() >= 1
    assert 1.3 <= len(interactions) / len(catalog) <= 2.8  # mean 2 queries per product


# --- determinism ----------------------------------------------------------------------------


def test_same_seed_gives_identical_files_different_seed_does_not(tmp_path, tiny_dir):
    synth.generate(tmp_path / "again", "tiny", seed=0, workers=2)  # a pool must not change a byte
    first, again = _files(tiny_dir), _files(tmp_path / "again")
    assert first.keys() == again.keys()
    assert [k for k in first if first[k] != again[k]] == []

    synth.generate(tmp_path / "other", "tiny", seed=1, workers=1)
    a = pd.read_parquet(tiny_dir / schema.CATALOG_FILE)
    b = pd.read_parquet(tmp_path / "other" / schema.CATALOG_FILE)
    assert not a.equals(b)
    other = _files(tmp_path / "other")
    same_name = [k for k in first if k.endswith(".png") and k in other]
    assert same_name and sum(first[k] != other[k] for k in same_name) > len(same_name) // 2


def test_same_seed_gives_equal_dataframes_and_pixels(tmp_path, tiny_dir, tiny_data):
    synth.generate(tmp_path / "b", "tiny", seed=0)
    again = schema.read_dataset(tmp_path / "b")
    for df_a, df_b in zip(tiny_data, again):
        pd.testing.assert_frame_equal(df_a, df_b)
    for uri in tiny_data[1]["query_image_uri"].iloc[:5]:
        a = np.asarray(Image.open(tiny_dir / uri))
        b = np.asarray(Image.open(tmp_path / "b" / uri))
        np.testing.assert_array_equal(a, b)


# --- world model and splits -----------------------------------------------------------------


def test_colour_variants_of_a_design_share_a_split_and_differ_in_colour(tiny_data):
    catalog, interactions, _ = tiny_data
    splits = schema.product_splits(interactions)
    catalog = catalog.assign(split=catalog["product_id"].map(splits))
    per_design = catalog.groupby("design_id").agg(
        splits=("split", "nunique"), colours=("colour", "nunique"), n=("product_id", "size"),
        attrs=("category", "nunique"), patterns=("pattern", "nunique"), brands=("brand", "nunique"))
    assert (per_design["splits"] == 1).all()
    assert (per_design["n"] == TINY.colours_per_design).all()
    assert (per_design["colours"] == TINY.colours_per_design).all()
    assert (per_design[["attrs", "patterns", "brands"]] == 1).all().all()
    designs = catalog.drop_duplicates("design_id")[["category", "pattern", "brand"]]
    assert not designs.duplicated().any(), "a design is a unique (category, pattern, brand)"
    counts = catalog.drop_duplicates("design_id")["split"].value_counts()
    assert counts.to_dict() == {"train": 8, "val": 4, "test": 4}  # 16 designs at 0.5/0.25/0.25


def test_reformulations_target_the_same_design_in_the_named_colour(tiny_data):
    catalog, interactions, reformulations = tiny_data
    splits = schema.product_splits(interactions)
    by_id = catalog.set_index("product_id")
    query_product = interactions.set_index("query_image_uri")["product_id"]
    assert len(reformulations) > 0
    for row in reformulations.itertuples():
        source = query_product[row.query_image_uri]  # an existing street photo of a product P
        target = row.product_id
        assert target != source
        assert by_id.loc[target, "design_id"] == by_id.loc[source, "design_id"]
        assert _colour_named(row.reformulation_text) == {by_id.loc[target, "colour"]}, row.reformulation_text
        assert splits[source] == "test" and splits[target] == "test"
    test_products = {p for p, s in splits.items() if s == "test"}
    assert set(query_product[reformulations["query_image_uri"]]) == test_products


# --- images ---------------------------------------------------------------------------------


def test_images_have_the_preset_size_white_catalog_corners_and_cluttered_queries(tiny_dir, tiny_data):
    catalog, interactions, _ = tiny_data
    size = TINY.image_size
    edge = (slice(0, 2), slice(-2, None))
    corners = [(r, c) for r in edge for c in edge]  # 2x2 pixel blocks at the four corners
    for uri in catalog["image_uri"]:
        img = Image.open(tiny_dir / uri)
        assert img.size == (size, size) and img.mode == "RGB"
        arr = np.asarray(img)
        assert all((arr[r, c] == 255).all() for r, c in corners), uri
        assert (arr < 200).any(), f"{uri}: the product must be drawn"
    for uri in interactions["query_image_uri"]:
        img = Image.open(tiny_dir / uri)
        assert img.size == (size, size) and img.mode == "RGB"
        arr = np.asarray(img).astype(int)
        assert max(np.abs(255 - arr[r, c]).max() for r, c in corners) > 20, f"{uri}: street backgrounds are not white"


def test_query_photo_differs_from_the_catalog_render_of_its_product(tiny_dir, tiny_data):
    catalog, interactions, _ = tiny_data
    catalog_uri = catalog.set_index("product_id")["image_uri"]
    for row in interactions.head(10).itertuples():
        query = np.asarray(Image.open(tiny_dir / row.query_image_uri)).astype(int)
        shop = np.asarray(Image.open(tiny_dir / catalog_uri[row.product_id])).astype(int)
        assert np.abs(query - shop).mean() > 10


def test_distractors_come_from_other_categories_and_share_the_trap_attributes():
    plan = planning._plan(TINY, 0)
    world = plan["world"]
    spec = world["specs"][0]
    rng = np.random.default_rng(0)
    always_pattern = dataclasses.replace(TINY, distractor_same_pattern_prob=1.0)
    for _ in range(50):
        d = rendering._pick_distractor(world, spec, rng, TINY)
        assert world["specs"][d]["category"] != spec["category"]
        if spec["pattern"] != "solid":
            d = rendering._pick_distractor(world, spec, rng, always_pattern)
            assert world["specs"][d]["pattern"] == spec["pattern"]


# --- text -----------------------------------------------------------------------------------


def test_titles_name_the_category_and_usually_the_attributes(tiny_data):
    catalog, _, _ = tiny_data
    words = {c.name: c.synonyms for c in synth.CATEGORIES}
    colour_hits = 0
    for row in catalog.itertuples():
        title = row.title.lower()
        assert any(re.search(rf"\b{re.escape(w)}\b", title) for w in words[row.category]), row.title
        colour_hits += _colour_named(title) == {row.colour}
    assert colour_hits >= len(catalog) // 2


def test_empty_query_text_fraction_is_honoured(tmp_path):
    none = synth.generate(tmp_path / "none", dataclasses.replace(TINY, empty_query_text_fraction=0.0))
    all_ = synth.generate(tmp_path / "all", dataclasses.replace(TINY, empty_query_text_fraction=1.0))
    texts_none = schema.read_manifest(none["out_dir"], schema.INTERACTIONS_FILE)["query_text"]
    texts_all = schema.read_manifest(all_["out_dir"], schema.INTERACTIONS_FILE)["query_text"]
    assert (texts_none.str.len() > 0).all()
    assert (texts_all == "").all()


# --- atomic writes --------------------------------------------------------------------------


def _failing_writer(after: int):
    calls = {"n": 0}
    real = jobs._write_png

    def write(image, path):
        calls["n"] += 1
        if calls["n"] > after:
            raise RuntimeError("disk full")
        real(image, path)

    return write


def test_a_failure_mid_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "_write_png", _failing_writer(after=10))
    with pytest.raises(RuntimeError, match="disk full"):
        synth.generate(tmp_path / "out", "tiny", workers=1)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_and_keeps_the_old_data(tmp_path, monkeypatch):
    out = tmp_path / "out"
    synth.generate(out, "tiny", seed=0)
    (out / "marker.txt").write_text("old")
    before = _files(out)
    with pytest.raises(FileExistsError, match="overwrite"):
        synth.generate(out, "tiny", seed=1)
    assert _files(out) == before

    monkeypatch.setattr(jobs, "_write_png", _failing_writer(after=10))
    with pytest.raises(RuntimeError):
        synth.generate(out, "tiny", seed=1, workers=1, overwrite=True)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    monkeypatch.undo()
    synth.generate(out, "tiny", seed=1, overwrite=True)
    assert not (out / "marker.txt").exists()
    assert json.loads((out / synth.CONFIG_FILE).read_text())["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_existing_empty_folder_is_used(tmp_path):
    (tmp_path / "out").mkdir()
    synth.generate(tmp_path / "out", "tiny")
    schema.read_dataset(tmp_path / "out")


# --- presets, config, CLI -------------------------------------------------------------------


def test_presets_hold_the_numbers_fixed_before_training():
    tiny, default, holdout = (synth.PRESETS[k] for k in ("tiny", "default", "holdout"))
    world = lambda c: (c.n_categories, c.n_patterns, c.n_colours, c.n_brands, c.n_designs, c.colours_per_design,
                       c.mean_queries_per_product, c.image_size, c.split_fractions)
    assert world(tiny) == (4, 4, 4, 3, 16, 2, 2.0, 32, (0.5, 0.25, 0.25))
    assert world(default) == (8, 8, 8, 6, 200, 3, 4.0, 64, (0.6, 0.1, 0.3))
    assert world(holdout) == (10, 6, 10, 5, 240, 2, 3.0, 64, (0.6, 0.1, 0.3))
    large = synth.PRESETS["large"]
    assert world(large) == (8, 8, 8, 6, 384, 3, 10.0, 64, (0.6, 0.1, 0.3))
    changed = {f.name for f in dataclasses.fields(synth.SynthConfig) if getattr(large, f.name) != getattr(default, f.name)}
    assert changed == {"name", "n_designs", "mean_queries_per_product"}
    assert (default.empty_query_text_fraction, holdout.empty_query_text_fraction) == (0.15, 0.25)
    assert (tiny.default_seed, default.default_seed, holdout.default_seed) == (0, 0, 1000)
    # clutter: low < medium < high
    for field in ("distractor_regions", "distractor_objects"):
        assert getattr(tiny, field)[1] < getattr(default, field)[1] < getattr(holdout, field)[1]
    for field in ("occlusion_prob", "occlusion_max", "brightness_jitter", "contrast_jitter", "colour_cast"):
        assert getattr(tiny, field) < getattr(default, field) < getattr(holdout, field), field
    for name, cfg in synth.PRESETS.items():
        assert cfg.name == name
        cfg.validate()


def test_the_default_seed_comes_from_the_config(tmp_path):
    summary = synth.generate(tmp_path / "d", dataclasses.replace(TINY, default_seed=7))
    assert summary["seed"] == 7
    assert json.loads((tmp_path / "d" / synth.CONFIG_FILE).read_text())["seed"] == 7


@pytest.mark.parametrize("change, message", [
    ({"n_designs": 49}, "n_designs"),
    ({"colours_per_design": 5}, "colours_per_design"),
    ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
    ({"n_categories": 99}, "n_categories"),
    ({"mean_queries_per_product": 0.5}, "mean_queries_per_product"),
])
def test_inconsistent_configs_are_rejected(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        synth.generate(tmp_path / "x", dataclasses.replace(TINY, **change))
    assert not (tmp_path / "x").exists()


def test_unknown_preset_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown synth preset"):
        synth.generate(tmp_path / "x", "huge")


def test_cli_prints_a_json_summary_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cli"
    assert synth.main(["--out", str(out), "--preset", "tiny", "--seed", "3", "--workers", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["seed"] == 3 and summary["preset"] == "tiny" and summary["products"] == 32
    assert synth.main(["--out", str(out), "--preset", "tiny"]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert synth.main(["--out", str(out), "--preset", "tiny", "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 0


@pytest.mark.parametrize("doc_path", ["docs/benchmark.md", "README.md"])
def test_the_parameter_table_in_the_docs_matches_the_presets(doc_path):
    doc = (Path(__file__).resolve().parents[2] / doc_path).read_text()
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1:4]
    for field in dataclasses.fields(synth.SynthConfig):
        expected = [str(getattr(synth.PRESETS[k], field.name)) for k in ("tiny", "default", "holdout")]
        assert rows.get(field.name) == expected, field.name
