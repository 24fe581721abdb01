"""Reformulation-style training rows for the 4-tower model, mined from the training split.

Multimodal search asks "this photo, but in red": the target is a *sibling* of the pictured
product (same design, another value of one attribute). The engagement log only pairs a photo
with the product it shows, so a 4-tower model trained on it alone never sees a text that
changes the target. Real systems mine such rows from query reformulation logs; our catalog
already knows the variant groups, so for a training click on product A we add rows
(A's street photo, "<template> <sibling's attribute value>", sibling B) for siblings B of A
in the same group. Only training rows and training products are used (siblings share the
design, and splits are by design, so B is a training product too); nothing from val/test.

Mined rows are marked ``engagement = False``: the collator turns that into
``query_image_valid = False``, so terms that pair the query photo with the target itself
(image-image, query image-title) skip them, while the query-text and fused-query terms learn
from them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Generic refinement phrasings; the attribute value is the catalog's own word.
TEMPLATES = ("in {v}", "{v} version", "same in {v}", "the {v} one", "{v} please", "but {v}")


def mine_reformulations(
    catalog: pd.DataFrame,
    train_rows: pd.DataFrame,
    *,
    group_by: str = "design_id",
    attribute: str = "colour",
    per_row: int = 1,
    seed: int = 0,
) -> pd.DataFrame:
    """Rows (query photo of A, refinement text naming B's ``attribute``, product B).

    Args:
        catalog: the catalog manifest (needs ``group_by`` and ``attribute`` columns).
        train_rows: training interactions (schema.INTERACTION_COLUMNS).
        group_by: catalog column grouping variants of one design.
        attribute: catalog column the refinement names (its values are used as words).
        per_row: mined rows per training row whose product has siblings (at most the number
            of siblings; drawn without replacement).
        seed: RNG seed (deterministic output).

    Returns:
        DataFrame with the interaction columns plus ``engagement`` (False), ``query_id``
        suffixed ``~r<k>``; empty when no product has a sibling. Both columns are optional in
        the data contract (schema.CONFIGURED_CATALOG_COLUMNS): when the catalog lacks one, the
        result is empty and ``attrs["skipped"]`` says which column and which config key, so
        the 4-tower model trains on engagement rows only and the training log says why.
    """
    keys = {group_by: "data.reformulation_group", attribute: "data.reformulation_attribute"}
    missing = [col for col in (group_by, attribute) if col not in catalog.columns]
    if missing:
        mined = pd.DataFrame(columns=list(train_rows.columns)).assign(engagement=pd.Series(dtype=bool))
        mined.attrs["skipped"] = (
            f"no mined reformulation rows: catalog has no column '{missing[0]}' "
            f"(set {keys[missing[0]]} to your catalog's column to mine them)"
        )
        return mined
    rng = np.random.default_rng(seed)
    products = catalog.set_index("product_id")
    groups = catalog.groupby(group_by)["product_id"].apply(list).to_dict()
    rows = []
    for r in train_rows.itertuples(index=False):
        group = products.at[r.product_id, group_by]
        value = products.at[r.product_id, attribute]
        siblings = [p for p in groups[group] if p != r.product_id and products.at[p, attribute] != value]
        if not siblings:
            continue
        for k, target in enumerate(rng.permutation(siblings)[:per_row]):
            template = TEMPLATES[rng.integers(len(TEMPLATES))]
            rows.append({
                **r._asdict(),
                "query_id": f"{r.query_id}~r{k}",
                "query_text": template.format(v=str(products.at[target, attribute]).replace("_", " ")),
                "product_id": target,
                # a point-in-time training set carries titles per row: the target's, not A's
                **({"title": products.at[target, "title"]} if "title" in train_rows.columns else {}),
            })
    mined = pd.DataFrame(rows, columns=list(train_rows.columns))
    mined["engagement"] = False
    return mined
