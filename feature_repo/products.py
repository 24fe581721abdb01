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

# ttl=0: a product version stays valid until the next version replaces it (no expiry).
product_text = FeatureView(
    name="product_text",
    entities=[product],
    ttl=timedelta(0),
    schema=[Field(name="title", dtype=String, description=_COLUMNS["title"].description)],
    source=product_features_source,
    online=True,
    description="Product text the text tower reads (title), point in time.",
    tags={"team": "visual-search", "tower": schema.PRODUCT_TEXT},
    owner=OWNER,
)

product_attributes = FeatureView(
    name="product_attributes",
    entities=[product],
    ttl=timedelta(0),
    schema=[
        Field(name="image_uri", dtype=String, description=_COLUMNS["image_uri"].description),
        Field(name="category", dtype=String, description=_COLUMNS["category"].description),
    ],
    source=product_features_source,
    online=True,
    description="Product attributes: catalog image URI and category (search results are hydrated with them).",
    tags={"team": "visual-search", "tower": schema.PRODUCT_IMAGE},
    owner=OWNER,
)

product_features = FeatureService(
    name=f"product_features_v{FEATURE_SERVICE_VERSION}",
    features=[product_text, product_attributes],
    description="Features of a product for training (point in time) and for hydrating search results (online).",
    tags={"team": "visual-search", "version": str(FEATURE_SERVICE_VERSION)},
    owner=OWNER,
)
