"""Pure parts of indexing: exact search, tie-aware recall, the verification decision, config, names."""

from __future__ import annotations

import numpy as np
import pytest

from vsearch.config import ConfigError
from vsearch.indexing.backfill import check_finite
from vsearch.indexing.config import load_index_config
from vsearch.indexing.store import collection_name
from vsearch.indexing.verify import decide, exact_topk, recall_at_k
from vsearch.schema import DataError


def test_exact_topk_matches_naive_sort():
    rng = np.random.default_rng(0)
    q, x = rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=(40, 5)).astype(np.float32)
    idx, scores = exact_topk(q, x, 6)
    for i in range(7):
        naive = sorted(range(40), key=lambda j: -float(q[i] @ x[j]))[:6]
        assert list(idx[i]) == naive
        assert np.allclose(scores[i], [q[i] @ x[j] for j in naive], atol=1e-5)
    idx_l2, _ = exact_topk(q, x, 3, "L2")
    assert list(idx_l2[0]) == sorted(range(40), key=lambda j: float(((q[0] - x[j]) ** 2).sum()))[:3]


def test_recall_counts_ties_and_misses():
    # k = 3; exact 3rd-best score 0.5. A returned row tied at 0.5 counts; 0.4 does not.
    assert recall_at_k([np.array([0.9, 0.7, 0.5])], np.array([0.5]), 3) == 1.0
    assert recall_at_k([np.array([0.9, 0.7, 0.4])], np.array([0.5]), 3) == pytest.approx(2 / 3)
    assert recall_at_k([np.array([0.9]), np.array([0.9, 0.8, 0.6])], np.array([0.5, 0.5]), 3) == pytest.approx((1 / 3 + 1) / 2)
    assert recall_at_k([], np.array([]), 3) == 0.0


def test_decide_names_every_failure_and_fails_closed():
    ok = dict(rows=10, expected_rows=10, dim=8, expected_dim=8, missing=0, non_finite=0, recall=0.99, min_recall=0.95)
    assert decide(**ok) == []
    assert decide(**{**ok, "dim": 4}) == ["wrong dimension: collection has 4, model embeds 8"]
    assert decide(**{**ok, "rows": 9, "missing": 1}) == ["row count 9 != catalog rows 10", "1 catalog product(s) missing from the collection"]
    assert decide(**{**ok, "recall": 0.5}) == ["recall@k 0.5000 below threshold 0.9500"]
    assert decide(**{**ok, "recall": None}) == ["recall was not measured"]
    assert decide(**{**ok, "recall": float("nan")}) == ["recall@k nan below threshold 0.9500"]
    assert decide(**{**ok, "non_finite": 2}) == ["2 stored embedding(s) are NaN/inf"]


def test_nan_embeddings_refused_with_row():
    vectors = np.ones((3, 4), np.float32)
    vectors[1, 2] = np.nan
    with pytest.raises(DataError) as err:
        check_finite(vectors, [10, 11, 12], ["a", "b", "c"], "data/catalog.parquet")
    assert err.value.row == 11 and "NaN" in err.value.rule and "'b'" in err.value.detail


def test_collection_names_are_milvus_safe():
    assert collection_name("vsearch", "3t-0123abcd4567") == "vsearch_3t_0123abcd4567"
    assert collection_name("1x", "a.b") == "c_1x_a_b"


def test_index_config_defaults_overrides_and_errors(tmp_path):
    cfg = load_index_config()
    assert cfg.index.type == "HNSW" and cfg.verify.k == 10 and cfg.milvus.token_env == "VSEARCH_MILVUS_TOKEN"
    cfg = load_index_config(overrides=["verify.min_recall=0.5", "backfill.batch_size=3"])
    assert cfg.verify.min_recall == 0.5 and cfg.backfill.batch_size == 3
    with pytest.raises(ConfigError, match="unknown key"):
        load_index_config(overrides=["verify.recal=1"])
    with pytest.raises(ConfigError, match="unknown index type 'ANNOY'"):
        load_index_config(overrides=["index.type=ANNOY"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['foo'\]"):
        load_index_config(overrides=["foo.bar=1"])
    with pytest.raises(ConfigError, match="verify.k: expected int"):  # a wrong type names its key
        load_index_config(overrides=["verify.k=many"])
    based = tmp_path / "based.yaml"  # a file extends the preset, as every config does
    based.write_text("base: index\nverify: {k: 5}\n")
    cfg = load_index_config(based)
    assert cfg.verify.k == 5 and cfg.index.type == "HNSW"
    bad = tmp_path / "i.yaml"
    bad.write_text("backfill: {batch_size: 0}\n")
    with pytest.raises(ConfigError, match="batch_size"):
        load_index_config(bad)


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, vsearch.indexing.cli, vsearch.serving.app, vsearch.serving.search; " \
           "print(sorted(m for m in ('pymilvus', 'fastapi', 'uvicorn', 'torch', 'feast') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
