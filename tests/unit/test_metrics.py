"""Retrieval metrics checked against naive pure-Python references, plus bootstrap CI behaviour."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vsearch.evaluation import metrics as M

# ---------------------------------------------------------------- naive references (loops, sorted)


def naive_rank(row: list[float], target: int) -> int:
    return sum(1 for j, s in enumerate(row) if j != target and s >= row[target])


def naive_topk(row: list[float], k: int) -> list[int]:
    return sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]


def naive_cross_category(topk_row: list[int], gallery_cats: list[str], true_cat: str) -> float:
    return sum(1 for j in topk_row if gallery_cats[j] != true_cat) / len(topk_row)


def tied_scores(rng: np.random.Generator, n_queries: int, n_gallery: int, levels: int) -> np.ndarray:
    """Scores on a coarse grid so that many items tie, including with the target."""
    return rng.integers(0, levels, size=(n_queries, n_gallery)).astype(np.float64) / levels


# ---------------------------------------------------------------- ranks and top-k


@pytest.mark.parametrize("levels", [3, 10, 1_000_000])
@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64])
def test_target_ranks_match_naive_reference(levels, chunk_size):
    rng = np.random.default_rng(levels)
    scores = tied_scores(rng, 23, 41, levels)
    targets = rng.integers(0, 41, size=23)
    ranks = M.target_ranks(scores, targets, chunk_size=chunk_size)
    expected = [naive_rank(scores[q].tolist(), int(targets[q])) for q in range(23)]
    assert ranks.dtype == np.int64
    assert ranks.tolist() == expected


def test_target_ranks_default_chunking_crosses_block_boundaries(monkeypatch):
    # Force tiny blocks through the default path (no chunk_size) to exercise the boundary logic.
    monkeypatch.setattr(M, "_MAX_BLOCK_ELEMENTS", 50)
    rng = np.random.default_rng(1)
    scores = tied_scores(rng, 19, 12, 4)  # 50 // 12 = 4 rows per block, last block partial
    targets = rng.integers(0, 12, size=19)
    expected = [naive_rank(scores[q].tolist(), int(targets[q])) for q in range(19)]
    assert M.target_ranks(scores, targets).tolist() == expected
    assert M.topk_indices(scores, 5).tolist() == [naive_topk(scores[q].tolist(), 5) for q in range(19)]


def test_target_ranks_hand_computed_and_pessimistic_ties():
    scores = np.array(
        [
            [0.9, 0.1, 0.5, 0.3],  # target 0 is the best -> 0
            [0.9, 0.1, 0.5, 0.3],  # target 3: 0.9 and 0.5 above -> 2
            [0.2, 0.2, 0.2, 0.2],  # all tied: pessimistic -> 3, not 0
            [0.5, 0.7, 0.5, 0.1],  # target 2 ties with item 0, item 1 above -> 2
        ]
    )
    assert M.target_ranks(scores, np.array([0, 3, 1, 2])).tolist() == [0, 2, 3, 2]


@pytest.mark.parametrize("k", [1, 3, 8, 17])
@pytest.mark.parametrize("chunk_size", [None, 1, 5])
def test_topk_indices_match_naive_reference_with_ties(k, chunk_size):
    rng = np.random.default_rng(k)
    scores = tied_scores(rng, 16, 17, 4)  # heavy ties, also at the k-th boundary
    got = M.topk_indices(scores, k, chunk_size=chunk_size)
    assert got.shape == (16, k)
    assert got.tolist() == [naive_topk(scores[q].tolist(), k) for q in range(16)]


def test_topk_indices_hand_computed():
    scores = np.array([[0.1, 0.9, 0.5, 0.9, 0.5], [1.0, 1.0, 1.0, 1.0, 1.0]])
    assert M.topk_indices(scores, 3).tolist() == [[1, 3, 2], [0, 1, 2]]


def test_topk_is_consistent_with_ranks():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(30, 50))
    targets = rng.integers(0, 50, size=30)
    ranks = M.target_ranks(scores, targets)
    top10 = M.topk_indices(scores, 10)
    in_top = np.array([targets[q] in top10[q] for q in range(30)])
    np.testing.assert_array_equal(in_top, ranks < 10)


def test_nan_scores_and_bad_arguments_are_rejected():
    scores = np.zeros((3, 4))
    scores[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN in query rows \[2\]"):
        M.target_ranks(scores, np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="NaN"):
        M.topk_indices(scores, 2)
    with pytest.raises(ValueError, match="targets must be in"):
        M.target_ranks(np.zeros((2, 4)), np.array([0, 4]))
    with pytest.raises(ValueError, match="k must be in"):
        M.topk_indices(np.zeros((2, 4)), 5)
    with pytest.raises(ValueError, match="ranks must be >= 0"):
        M.recall_at_k(np.array([-1, 0]), 1)


# ---------------------------------------------------------------- per-query values


def test_recall_and_reciprocal_rank_match_reference():
    rng = np.random.default_rng(5)
    ranks = rng.integers(0, 30, size=200)
    for k in (1, 5, 10):
        expected = [1.0 if r < k else 0.0 for r in ranks.tolist()]
        assert M.recall_at_k(ranks, k).tolist() == expected
    expected_rr = [1.0 / (r + 1) for r in ranks.tolist()]
    np.testing.assert_allclose(M.reciprocal_rank(ranks), expected_rr, rtol=0, atol=1e-15)


def test_recall_and_mrr_hand_computed():
    ranks = np.array([0, 1, 4, 9, 10])
    assert M.recall_at_k(ranks, 1).mean() == pytest.approx(0.2)
    assert M.recall_at_k(ranks, 5).mean() == pytest.approx(0.6)
    assert M.recall_at_k(ranks, 10).mean() == pytest.approx(0.8)
    assert M.reciprocal_rank(ranks).mean() == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 10 + 1 / 11) / 5)


def test_cross_category_fp_matches_reference():
    rng = np.random.default_rng(7)
    gallery_cats = rng.choice(["mug", "shirt", "bag", "shoe"], size=60)
    scores = rng.normal(size=(25, 60))
    query_cats = rng.choice(["mug", "shirt", "bag", "shoe"], size=25)
    top10 = M.topk_indices(scores, 10)
    got = M.cross_category_fp_at_k(top10, gallery_cats, query_cats)
    expected = [naive_cross_category(top10[q].tolist(), gallery_cats.tolist(), query_cats[q]) for q in range(25)]
    np.testing.assert_allclose(got, expected)


def test_cross_category_fp_hand_computed():
    gallery_cats = np.array(["mug", "mug", "shirt", "bag"], dtype=object)
    topk = np.array([[0, 1, 2, 3], [2, 3, 0, 1]])
    got = M.cross_category_fp_at_k(topk, gallery_cats, np.array(["mug", "shirt"]))
    assert got.tolist() == [0.5, 0.75]  # lower is better


def test_recall_curve_is_monotone_and_matches_recall():
    ranks = np.array([0, 2, 2, 7, 40])
    curve = M.recall_curve(ranks, ks=range(1, 51))
    assert list(curve) == list(range(1, 51))
    assert all(type(k) is int and type(v) is float for k, v in curve.items())
    assert curve[1] == 0.2 and curve[3] == 0.6 and curve[8] == 0.8 and curve[41] == 1.0
    values = list(curve.values())
    assert values == sorted(values)


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_mean_and_is_reproducible():
    values = np.random.default_rng(0).binomial(1, 0.4, size=400).astype(float)
    lo, hi = M.bootstrap_ci(values, n_boot=500, seed=11)
    assert type(lo) is float and type(hi) is float
    assert lo < values.mean() < hi
    assert (lo, hi) == M.bootstrap_ci(values, n_boot=500, seed=11)
    assert (lo, hi) != M.bootstrap_ci(values, n_boot=500, seed=12)


def test_bootstrap_ci_width_matches_normal_approximation():
    values = np.random.default_rng(1).binomial(1, 0.5, size=2000).astype(float)
    lo, hi = M.bootstrap_ci(values, n_boot=2000, seed=0)
    normal_half_width = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert (hi - lo) / 2 == pytest.approx(normal_half_width, rel=0.15)


def test_bootstrap_ci_narrows_with_more_queries():
    rng = np.random.default_rng(2)
    few = rng.binomial(1, 0.5, size=50).astype(float)
    many = rng.binomial(1, 0.5, size=5000).astype(float)
    lo_few, hi_few = M.bootstrap_ci(few, n_boot=500)
    lo_many, hi_many = M.bootstrap_ci(many, n_boot=500)
    assert (hi_many - lo_many) < (hi_few - lo_few) / 4


def test_bootstrap_in_blocks_matches_one_shot(monkeypatch):
    values = np.random.default_rng(4).normal(size=37)
    one_shot = M.bootstrap_ci(values, n_boot=300, seed=9)
    monkeypatch.setattr(M, "_MAX_BLOCK_ELEMENTS", 100)  # 2 resamples per block
    lo, hi = M.bootstrap_ci(values, n_boot=300, seed=9)
    # Different blocking draws a different stream; the interval must still be close.
    assert lo == pytest.approx(one_shot[0], abs=0.15) and hi == pytest.approx(one_shot[1], abs=0.15)


@pytest.mark.parametrize("value", [0.0, 1.0, 0.1, 1 / 3])
def test_bootstrap_ci_of_constant_values_is_degenerate(value):
    assert M.bootstrap_ci(np.full(7, value)) == (value, value)


def test_paired_bootstrap_ci():
    rng = np.random.default_rng(8)
    a = rng.binomial(1, 0.5, size=300).astype(float)
    assert M.paired_bootstrap_ci(a, a.copy()) == (0.0, 0.0, 0.0)
    better = a.copy()
    better[np.flatnonzero(a == 0)[:60]] = 1.0  # B misses 60 queries that A gets: +0.2
    diff, lo, hi = M.paired_bootstrap_ci(better, a, seed=1)
    assert diff == pytest.approx(0.2)
    assert 0.0 < lo < diff < hi
    # Pairing: the paired interval is narrower than the two independent ones would suggest.
    width_a = np.subtract(*M.bootstrap_ci(a)[::-1])
    assert hi - lo < width_a
    with pytest.raises(ValueError, match="same queries"):
        M.paired_bootstrap_ci(a, a[:-1])


def test_bootstrap_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="non-empty"):
        M.bootstrap_ci(np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        M.bootstrap_ci(np.array([0.1, np.nan]))


# ---------------------------------------------------------------- summary contract


def test_metric_constants_cover_the_contract():
    assert M.METRIC_KEYS == (
        "recall@1", "recall@5", "recall@10", "mrr", "cross_category_fp@10", "multimodal_recall@10",
    )
    assert set(M.METRIC_DIRECTIONS) == set(M.METRIC_KEYS)
    assert M.METRIC_DIRECTIONS["cross_category_fp@10"] == "lower"
    assert {M.METRIC_DIRECTIONS[k] for k in M.METRIC_KEYS if k != "cross_category_fp@10"} == {"higher"}


def test_summarize_has_exactly_the_contract_shape():
    rng = np.random.default_rng(6)
    n_gallery = 80
    scores = rng.normal(size=(40, n_gallery)).astype(np.float32)
    targets = rng.integers(0, n_gallery, size=40)
    categories = rng.choice(["mug", "shirt", "bag"], size=n_gallery)
    ranks = M.target_ranks(scores, targets)
    mm_ranks = rng.integers(0, 30, size=15)  # the reformulation set has its own queries
    per_query = {
        "recall@1": M.recall_at_k(ranks, 1),
        "recall@5": M.recall_at_k(ranks, 5),
        "recall@10": M.recall_at_k(ranks, 10),
        "mrr": M.reciprocal_rank(ranks),
        "cross_category_fp@10": M.cross_category_fp_at_k(
            M.topk_indices(scores, 10), categories, categories[targets]
        ),
        "multimodal_recall@10": M.recall_at_k(mm_ranks, 10),
    }
    summary = M.summarize(per_query, n_boot=200, seed=0)
    assert list(summary) == [*M.METRIC_KEYS, "ci95"]
    assert list(summary["ci95"]) == list(M.METRIC_KEYS)
    for key in M.METRIC_KEYS:
        assert type(summary[key]) is float
        assert summary[key] == pytest.approx(float(per_query[key].mean()))
        lo, hi = summary["ci95"][key]
        assert type(lo) is float and type(hi) is float
        assert lo <= summary[key] <= hi
    document = {"models": {"image_only": summary, "three_tower": summary, "four_tower": summary}}
    assert json.loads(json.dumps(document)) == document
    with pytest.raises(ValueError, match="reserved"):
        M.summarize({"ci95": np.ones(3)})
