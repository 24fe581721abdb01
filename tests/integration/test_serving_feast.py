"""The search service hydrates results through the Feast online store (issue: indexing/search + features)."""

from __future__ import annotations

import shutil

import pytest

from vsearch import schema
from vsearch.features import online
from vsearch.serving.search import CatalogHydrator, FeastHydrator, hydrate, make_hydrator, Hit


@pytest.mark.integration
def test_feast_hydration_returns_what_the_catalog_says(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    repo = tmp_path / "repo"
    online.materialize(data, repo)
    catalog = schema.read_manifest(data, schema.CATALOG_FILE)
    ids = list(catalog["product_id"])
    feast_hydrator = make_hydrator(f"feast:{repo}", data)
    assert isinstance(feast_hydrator, FeastHydrator)
    from_feast = feast_hydrator.lookup(ids + ["no-such-product"])
    from_catalog = CatalogHydrator(data).lookup(ids)
    assert from_feast == from_catalog and len(from_feast) == len(ids)
    hits = [Hit(product_id=ids[1], score=0.9, category="?"), Hit(product_id=ids[0], score=0.5, category="?")]
    rows = hydrate(hits, feast_hydrator)
    assert [r["product_id"] for r in rows] == [ids[1], ids[0]]
    assert rows[0]["title"] == from_catalog[ids[1]]["title"]
