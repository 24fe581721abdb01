"""Retrieval metrics over a query x gallery score matrix, with bootstrap confidence intervals.

Pure numpy: no torch, no I/O. Every metric is the mean over queries of a per-query value,
so the same per-query arrays feed the point estimate, its bootstrap CI and paired
model-vs-model comparisons (the gate).

Shapes used throughout:
    Q: number of queries, G: number of gallery (catalog) items, k: retrieval depth.
    scores (Q, G) float: similarity, higher = more similar (e.g. cosine of L2-normalised
        embeddings, in [-1, 1]).
    targets (Q,) int: gallery row of each query's true (clicked/bought) product.
    ranks (Q,) int: 0-based rank of the target, 0 = retrieved first.

The per-model summary written to ``metrics.json`` (see `summarize`)::

    {"models": {"image_only": M, "three_tower": M, "four_tower": M}}
    M = {"recall@1": float, ..., "ci95": {"recall@1": [lo, hi], ...}}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

METRIC_KEYS: tuple[str, ...] = (
    "recall@1",
    "recall@5",
    "recall@10",
    "mrr",
    "cross_category_fp@10",
    "multimodal_recall@10",
)
"""The metrics of one model in ``metrics.json``, in display order."""

METRIC_DIRECTIONS: dict[str, str] = {
    "recall@1": "higher",
    "recall@5": "higher",
    "recall@10": "higher",
    "mrr": "higher",
    "cross_category_fp@10": "lower",
    "multimodal_recall@10": "higher",
}
"""Which way is better for each metric: ``"higher"`` or ``"lower"``."""

# Upper bound on the elements of one (rows, G) temporary: 4M elements is 32 MB as float64,
# so a 1e4 x 1e5 score matrix is processed 40 queries at a time.
_MAX_BLOCK_ELEMENTS = 1 << 22


def _rows_per_block(n_cols: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return int(chunk_size)
    return max(1, _MAX_BLOCK_ELEMENTS // max(1, n_cols))


def _check_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (Q, G), got shape {scores.shape}")
    if scores.shape[1] == 0:
        raise ValueError("scores has an empty gallery (G == 0)")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    return scores


def _check_block_finite(block: np.ndarray, start: int) -> None:
    # NaN compares False with everything, which would silently give a wrong rank.
    bad = np.isnan(block).any(axis=1)
    if bad.any():
        rows = (np.flatnonzero(bad) + start)[:5].tolist()
        raise ValueError(f"scores contain NaN in query rows {rows} (first 5 shown)")


def _check_ranks(ranks: np.ndarray) -> np.ndarray:
    ranks = np.asarray(ranks)
    if ranks.ndim != 1:
        raise ValueError(f"ranks must have shape (Q,), got shape {ranks.shape}")
    if ranks.size and not np.issubdtype(ranks.dtype, np.integer):
        raise ValueError(f"ranks must be integers, got dtype {ranks.dtype}")
    if ranks.size and ranks.min() < 0:
        raise ValueError("ranks must be >= 0 (0-based ranks)")
    return ranks


def target_ranks(
    scores: np.ndarray, targets: np.ndarray, *, chunk_size: int | None = None
) -> np.ndarray:
    """0-based rank of each query's target under descending score, ties counted pessimistically.

    rank[q] = number of OTHER gallery items whose score is >= the target's score, so a target
    tied with n others gets rank n, never 0 (a degenerate model that scores everything equal
    gets the worst rank, not the best).

    Args:
        scores: (Q, G) float, higher = more similar. NaN raises ValueError.
        targets: (Q,) int, gallery row of each query's true product, in [0, G).
        chunk_size: queries per block; default keeps each (rows, G) temporary at ~4M elements.

    Returns:
        (Q,) int64 ranks in [0, G-1]; lower is better.
    """
    scores = _check_scores(scores)
    targets = np.asarray(targets)
    n_queries, n_gallery = scores.shape
    if targets.shape != (n_queries,):
        raise ValueError(f"targets must have shape ({n_queries},), got {targets.shape}")
    if n_queries and not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be integers, got dtype {targets.dtype}")
    if n_queries and (targets.min() < 0 or targets.max() >= n_gallery):
        raise ValueError(f"targets must be in [0, {n_gallery}), got [{targets.min()}, {targets.max()}]")

    ranks = np.empty(n_queries, dtype=np.int64)
    rows = _rows_per_block(n_gallery, chunk_size)
    for start in range(0, n_queries, rows):
        block = scores[start : start + rows]
        _check_block_finite(block, start)
        target_scores = block[np.arange(block.shape[0]), targets[start : start + rows]]
        # The target itself always satisfies >=, hence the -1.
        ranks[start : start + rows] = (block >= target_scores[:, None]).sum(axis=1) - 1
    return ranks


def topk_indices(scores: np.ndarray, k: int, *, chunk_size: int | None = None) -> np.ndarray:
    """Gallery rows of the k highest-scoring items per query, best first.

    Ties are broken by lower gallery index, deterministically, also at the k-th boundary
    (a plain argpartition picks an arbitrary subset of tied items there). O(G) per query
    plus O(k log k) for the final sort; rows with ties at the k-th value cost one more O(G).

    Args:
        scores: (Q, G) float, higher = more similar. NaN raises ValueError.
        k: retrieval depth, 1 <= k <= G.
        chunk_size: queries per block; default keeps each (rows, G) temporary at ~4M elements.

    Returns:
        (Q, k) int64; column 0 is the best-scoring item.
    """
    scores = _check_scores(scores)
    n_queries, n_gallery = scores.shape
    if not 1 <= k <= n_gallery:
        raise ValueError(f"k must be in [1, G={n_gallery}], got {k}")

    out = np.empty((n_queries, k), dtype=np.int64)
    rows = _rows_per_block(n_gallery, chunk_size)
    for start in range(0, n_queries, rows):
        block = scores[start : start + rows]
        _check_block_finite(block, start)
        n = block.shape[0]
        cols = np.argpartition(block, n_gallery - k, axis=1)[:, n_gallery - k :]  # k largest, any order
        values = np.take_along_axis(block, cols, axis=1)
        kth_value = values.min(axis=1)
        # argpartition picks an arbitrary subset of the items tied with the k-th value; redo
        # the (rare) rows with such ties, keeping the lowest-index tied items that still fit.
        ambiguous = np.flatnonzero((block >= kth_value[:, None]).sum(axis=1) > k)
        if ambiguous.size:
            sub, kth = block[ambiguous], kth_value[ambiguous, None]
            tied = sub == kth
            slots_left = k - (sub > kth).sum(axis=1)
            selected = (sub > kth) | (tied & (np.cumsum(tied, axis=1) <= slots_left[:, None]))
            cols[ambiguous] = np.nonzero(selected)[1].reshape(ambiguous.size, k)
            values[ambiguous] = np.take_along_axis(sub, cols[ambiguous], axis=1)
        # Sort by (score desc, index asc): order by index first, then a stable sort on score.
        by_index = np.argsort(cols, axis=1)
        cols = np.take_along_axis(cols, by_index, axis=1)
        values = np.take_along_axis(values, by_index, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")  # stable keeps lower index first
        out[start : start + n] = np.take_along_axis(cols, order, axis=1)
    return out


def recall_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-query Recall@k: 1.0 if the target is among the top k (rank < k), else 0.0.

    Args:
        ranks: (Q,) int, 0-based target ranks from `target_ranks`.
        k: retrieval depth, >= 1.

    Returns:
        (Q,) float64 in {0, 1}; the metric is the mean, higher is better.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return (_check_ranks(ranks) < k).astype(np.float64)


def reciprocal_rank(ranks: np.ndarray) -> np.ndarray:
    """Per-query reciprocal rank 1 / (rank + 1); its mean is the MRR.

    Args:
        ranks: (Q,) int, 0-based target ranks from `target_ranks`.

    Returns:
        (Q,) float64 in (0, 1]; higher is better.
    """
    return 1.0 / (_check_ranks(ranks).astype(np.float64) + 1.0)


def cross_category_fp_at_k(
    topk: np.ndarray, gallery_categories: np.ndarray, query_categories: np.ndarray
) -> np.ndarray:
    """Per-query share of the k retrieved items whose category differs from the true product's.

    This is the paper's local-pattern failure: a zebra-striped mug query that retrieves
    zebra-striped shirts. k is ``topk.shape[1]``.

    Args:
        topk: (Q, k) int gallery rows, e.g. from `topk_indices`.
        gallery_categories: (G,) str, category of each gallery item.
        query_categories: (Q,) str, category of each query's true product.

    Returns:
        (Q,) float64 in [0, 1]; the metric is the mean, lower is better.
    """
    topk = np.asarray(topk)
    gallery_categories = np.asarray(gallery_categories).astype(str)
    query_categories = np.asarray(query_categories).astype(str)
    if topk.ndim != 2 or topk.shape[1] < 1:
        raise ValueError(f"topk must have shape (Q, k) with k >= 1, got {topk.shape}")
    if gallery_categories.ndim != 1:
        raise ValueError(f"gallery_categories must have shape (G,), got {gallery_categories.shape}")
    if query_categories.shape != (topk.shape[0],):
        raise ValueError(
            f"query_categories must have shape ({topk.shape[0]},), got {query_categories.shape}"
        )
    if topk.size and (topk.min() < 0 or topk.max() >= gallery_categories.shape[0]):
        raise ValueError(f"topk indices must be in [0, {gallery_categories.shape[0]})")
    mismatched = gallery_categories[topk] != query_categories[:, None]
    return mismatched.mean(axis=1, dtype=np.float64)


def recall_curve(ranks: np.ndarray, ks: Iterable[int] = range(1, 51)) -> dict[int, float]:
    """Recall@K for every K in ``ks``, for plotting.

    Args:
        ranks: (Q,) int, 0-based target ranks, Q >= 1.
        ks: depths, each >= 1.

    Returns:
        {K: mean Recall@K} with plain int keys and float values; higher is better.
    """
    ranks = _check_ranks(ranks)
    if ranks.size == 0:
        raise ValueError("recall_curve needs at least one query")
    return {int(k): float(recall_at_k(ranks, int(k)).mean()) for k in ks}


def _check_values(values: np.ndarray, name: str = "values") -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of per-query values, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contain NaN or inf")
    return values


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot,) means of query resamples drawn with replacement, in bounded-memory blocks."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = values.shape[0]
    per_block = max(1, _MAX_BLOCK_ELEMENTS // n)
    means = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, per_block):
        count = min(per_block, n_boot - start)
        idx = rng.integers(0, n, size=(count, n))
        means[start : start + count] = values[idx].mean(axis=1)
    return means


def _percentile_interval(
    means: np.ndarray, alpha: float, low: float, high: float
) -> tuple[float, float]:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    lo, hi = np.percentile(means, [100.0 * alpha / 2, 100.0 * (1 - alpha / 2)])
    # A resample mean lies in [min, max] of the data; clipping removes float summation error,
    # so constant values give exactly [v, v].
    return float(np.clip(lo, low, high)), float(np.clip(hi, low, high))


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of per-query values.

    Queries are resampled with replacement ``n_boot`` times; the same seed gives the same
    interval, and the same seed on equally many queries resamples the same query indices
    (so CIs of different models over one query set are comparable).

    Args:
        values: (Q,) float per-query values (e.g. from `recall_at_k`), finite, Q >= 1.
        n_boot: number of bootstrap resamples.
        seed: seed of ``np.random.default_rng``.
        alpha: 1 - confidence level; 0.05 gives a 95% interval.

    Returns:
        (lo, hi) plain floats, lo <= hi, in the metric's own units.
    """
    values = _check_values(values)
    means = _bootstrap_means(values, n_boot, seed)
    return _percentile_interval(means, alpha, float(values.min()), float(values.max()))


def paired_bootstrap_ci(
    a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float, float]:
    """Paired bootstrap CI of mean(a - b), resampling the same queries for both models.

    Pairing removes the between-query variance both models share, so it detects smaller
    differences than comparing two independent CIs. Whether a positive difference is good
    depends on the metric's direction (`METRIC_DIRECTIONS`).

    Args:
        a: (Q,) float per-query values of model A (e.g. the candidate).
        b: (Q,) float per-query values of model B on the same queries, in the same order.
        n_boot, seed, alpha: as in `bootstrap_ci`.

    Returns:
        (mean_diff, lo, hi) plain floats, in the metric's own units.
    """
    a = _check_values(a, "a")
    b = _check_values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must be values of the same queries, got shapes {a.shape} and {b.shape}")
    diff = a - b
    low, high = float(diff.min()), float(diff.max())
    mean_diff = float(np.clip(diff.mean(), low, high))
    lo, hi = _percentile_interval(_bootstrap_means(diff, n_boot, seed), alpha, low, high)
    return mean_diff, lo, hi


def summarize(
    per_query: Mapping[str, np.ndarray], n_boot: int = 1000, seed: int = 0
) -> dict:
    """Mean and 95% bootstrap CI of each metric: one model's entry of ``metrics.json``.

    Metrics may have different query counts (``multimodal_recall@10`` is computed on the
    reformulation set, not the engagement test queries).

    Args:
        per_query: {metric name: (Q_m,) float per-query values}, e.g. the keys of
            `METRIC_KEYS`; the name ``"ci95"`` is reserved.
        n_boot, seed: as in `bootstrap_ci`; the same seed is used for every metric.

    Returns:
        ``{metric: mean, ..., "ci95": {metric: [lo, hi], ...}}`` with plain Python floats,
        json-serialisable, metrics in the input order.
    """
    summary: dict = {}
    ci95: dict[str, list[float]] = {}
    for name, values in per_query.items():
        if name == "ci95":
            raise ValueError("'ci95' is reserved and cannot be a metric name")
        values = _check_values(values, f"per-query values of {name!r}")
        low, high = float(values.min()), float(values.max())
        summary[name] = float(np.clip(values.mean(), low, high))
        lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed, alpha=0.05)
        ci95[name] = [lo, hi]
    summary["ci95"] = ci95
    return summary
