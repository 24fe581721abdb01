"""Feast definitions for vsearch products: entity, source, feature views, feature service.

Definitions only: ``feast apply`` (and ``vsearch features``) import every .py here. Column
names and types come from the data contract (``vsearch.schema.PRODUCT_HISTORY_COLUMNS``):
one row per product version, ``event_timestamp`` = when that version became effective, so a
point-in-time join gives each click the title the product had when it was clicked.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import String
from feast.value_type import ValueType

from vsearch import schema

OWNER = "vsearch-ml@example.com"
# Bump FEATURE_SERVICE_VERSION when the feature set a model trains on changes; the service
# name carries it so a model records exactly which features it saw.
FEATURE_SERVICE_VERSION = 1
_COLUMNS = {c.name: c for c in schema.PRODUCT_HISTORY_COLUMNS}

product = Entity(
    name="product",
    join_keys=["product_id"],
    value_type=ValueType.STRING,
    description=_COLUMNS["product_id"].description,
    tags={"team": "visual-search", "contract": "vsearch.schema"},
    owner=OWNER,
)

# Relative to the working repo (vsearch features writes it from the data folder).
product_features_source = FileSource(
    name="product_features_source",
    path="data/product_features.parquet",
    timestamp_field="event_timestamp",
    description="Product versions (title, image, category) with the time each became effective.",
    tags={"team": "visual-search", "format": "parquet"},
    owner=OWNER,
)

def _product_view(name: str, columns: tuple[str, ...], description: str, tower: str) -> FeatureView:
    """A view of ``columns`` of the product history, online too. ttl=0: a product version stays
    valid until the next version replaces it (no expiry)."""
    return FeatureView(
        name=name,
        entities=[product],
        ttl=timedelta(0),
        schema=[Field(name=column, dtype=String, description=_COLUMNS[column].description) for column in columns],
        source=product_features_source,
        online=True,
        description=description,
        tags={"team": "visual-search", "tower": tower},
        owner=OWNER,
    )


product_text = _product_view("product_text", ("title",), "Product text the text tower reads (title), point in time.",
                             schema.PRODUCT_TEXT)
product_attributes = _product_view(
    "product_attributes", ("image_uri", "category"),
    "Product attributes: catalog image URI and category (search results are hydrated with them).", schema.PRODUCT_IMAGE)

product_features = FeatureService(
    name=f"product_features_v{FEATURE_SERVICE_VERSION}",
    features=[product_text, product_attributes],
    description="Features of a product for training (point in time) and for hydrating search results (online).",
    tags={"team": "visual-search", "version": str(FEATURE_SERVICE_VERSION)},
    owner=OWNER,
)
