"""Verification of a built collection before any alias points to it.

Checks, all at Strong consistency: the vector dimension equals the model's; the row count
equals the catalog's and every catalog id is stored; no stored vector is NaN/inf; the
sampled recall@k of the index against exact numpy search over the stored vectors reaches the
configured threshold. The decision is a pure function of the measured numbers
(:func:`decide`), so it is tested without Milvus.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class VerifyResult:
    ok: bool
    reasons: list[str]
    rows: int
    expected_rows: int
    dim: int
    expected_dim: int
    missing: int = 0
    non_finite: int = 0
    recall: float | None = None
    min_recall: float = 0.0
    k: int = 10
    sample_size: int = 0
    checks: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def exact_topk(queries: np.ndarray, vectors: np.ndarray, k: int, metric: str = "IP") -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k: (Q, D) queries against (N, D) vectors -> ((Q, k) row indices, (Q, k) scores).

    Scores are similarities (higher is closer): inner product, cosine, or minus squared L2.
    """
    if metric == "L2":
        scores = -((queries[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)
    else:
        if metric == "COSINE":
            queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        scores = queries @ vectors.T
    k = min(k, vectors.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return top, np.take_along_axis(scores, top, axis=1)


def recall_at_k(found_scores: list[np.ndarray], kth_exact: np.ndarray, k: int, tol: float = 1e-5) -> float:
    """Tie-aware recall@k of approximate results against exact search.

    Args:
        found_scores: per query, the exact similarity of each distinct row the index returned
            (at most k of them).
        kth_exact: (Q,) the k-th best exact similarity of each query.
        tol: a returned row within ``tol`` of the k-th best counts as a true neighbour
            (equal-score ties are interchangeable).
    Returns:
        Mean over queries of |correct returned| / k, in [0, 1]; higher is better.
    """
    if not len(found_scores):
        return 0.0
    per_query = [min(int(np.sum(s >= kth - tol)), k) / k for s, kth in zip(found_scores, kth_exact)]
    return float(np.mean(per_query))


def decide(
    *,
    rows: int,
    expected_rows: int,
    dim: int,
    expected_dim: int,
    missing: int,
    non_finite: int,
    recall: float | None,
    min_recall: float,
) -> list[str]:
    """The reasons to refuse a collection (empty list = verified). Pure; fails closed."""
    reasons = []
    if dim != expected_dim:
        reasons.append(f"wrong dimension: collection has {dim}, model embeds {expected_dim}")
    if rows != expected_rows:
        reasons.append(f"row count {rows} != catalog rows {expected_rows}")
    if missing:
        reasons.append(f"{missing} catalog product(s) missing from the collection")
    if non_finite:
        reasons.append(f"{non_finite} stored embedding(s) are NaN/inf")
    if recall is None:
        reasons.append("recall was not measured")
    elif not recall >= min_recall:
        reasons.append(f"recall@k {recall:.4f} below threshold {min_recall:.4f}")
    return reasons
