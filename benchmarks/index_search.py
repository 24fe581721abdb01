"""Index search: Milvus (Lite by default) QPS and recall@10 vs exact numpy search, one run.

100k unit vectors of dimension 128 drawn around 1,000 cluster centres (embedding-like, not
uniform noise), inserted through the backfill code path's store (flush, then index, then
load), then the same held-out queries (noisy copies of stored vectors) go to:

- the index, batched (``--batch`` queries per request) and single-query (one per request);
- exact numpy search (``queries @ vectors.T`` + top-k), batched and single-query.

Recall@10 is tie-aware against the exact top 10 (vsearch.indexing.verify.recall_at_k).
QPS figures are medians over ``--rounds`` passes. Milvus Lite is pure Python over FAISS:
single queries pay a per-request overhead (shared NOTES: 11-15 QPS), so batch.

    python benchmarks/index_search.py                       # 100k x 128, HNSW, Lite
    python benchmarks/index_search.py --n 20000 --index IVF_FLAT
    python benchmarks/index_search.py --milvus-uri http://127.0.0.1:19530

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_vectors(n: int, dim: int, seed: int = 0, centres: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000, help="queries for batched search")
    parser.add_argument("--single-queries", type=int, default=100, help="queries sent one by one")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--index", default="HNSW")
    parser.add_argument("--milvus-uri", default=None, help="default: a fresh Milvus Lite db in a temp folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)

    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import CATEGORY, PRIMARY, VECTOR, connect, hit_id
    from vsearch.indexing.verify import exact_topk, recall_at_k

    work = Path(tempfile.mkdtemp(prefix="vsearch-bench-index-"))
    cfg = load_index_config(overrides=[f"index.type={args.index}", "index.fallback=[]", *args.overrides])
    uri = args.milvus_uri or str(work / "milvus.db")
    vectors = make_vectors(args.n, args.dim)
    rng = np.random.default_rng(1)
    picks = rng.integers(0, args.n, args.queries)
    queries = vectors[picks] + 0.1 * rng.normal(size=(args.queries, args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids = [f"v{i:07d}" for i in range(args.n)]
    name = f"bench_{args.index.lower()}_{args.n}"
    out: dict = {"benchmark": "index_search", "n": args.n, "dim": args.dim, "k": args.k, "index": args.index,
                 "index_params": cfg.index.hnsw if args.index == "HNSW" else cfg.index.ivf,
                 "search_params": {"ef": cfg.search.ef, "nprobe": cfg.search.nprobe},
                 "backend": "milvus-lite" if args.milvus_uri is None else args.milvus_uri}
    try:
        with connect(uri, cfg) as store:
            if store.client.has_collection(name):
                store.client.drop_collection(name)
            store.create_collection(name, args.dim)
            t0 = time.perf_counter()
            for s in range(0, args.n, 5000):
                store.client.insert(name, [{PRIMARY: i, VECTOR: v, CATEGORY: ""} for i, v in zip(ids[s : s + 5000], vectors[s : s + 5000].tolist())])
            out["insert_rows_per_s"] = round(args.n / (time.perf_counter() - t0), 1)
            t0 = time.perf_counter()
            out["index_type"] = store.build_index(name, cfg.index, cfg.milvus.timeout_s)
            out["flush_and_index_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            store.load(name, cfg.milvus.timeout_s)
            out["load_s"] = round(time.perf_counter() - t0, 2)
            out["index_info"] = {k: str(v) for k, v in store.client.describe_index(name, VECTOR).items()}

            row_of = {pid: j for j, pid in enumerate(ids)}
            exact_idx, exact_scores = exact_topk(queries, vectors, args.k, cfg.index.metric)

            def index_batched():
                found = []
                for s in range(0, args.queries, args.batch):
                    res = store.search(name, queries[s : s + args.batch], args.k, cfg.search, cfg.index.metric)
                    found += [[row_of[hit_id(h)] for h in hits] for hits in res]
                return found

            def index_single():
                return [[row_of[hit_id(h)] for h in store.search(name, queries[q : q + 1], args.k, cfg.search, cfg.index.metric)[0]]
                        for q in range(args.single_queries)]

            def numpy_batched():
                return [list(r) for s in range(0, args.queries, args.batch) for r in exact_topk(queries[s : s + args.batch], vectors, args.k)[0]]

            def numpy_single():
                return [list(exact_topk(queries[q : q + 1], vectors, args.k)[0][0]) for q in range(args.single_queries)]

            timings = {m: [] for m in ("index_batched", "index_single", "numpy_batched", "numpy_single")}
            results = {}
            fns = {"index_batched": (index_batched, args.queries), "index_single": (index_single, args.single_queries),
                   "numpy_batched": (numpy_batched, args.queries), "numpy_single": (numpy_single, args.single_queries)}
            for _ in range(args.rounds):  # interleaved rounds
                for m, (fn, nq) in fns.items():
                    t0 = time.perf_counter()
                    results[m] = fn()
                    timings[m].append(nq / (time.perf_counter() - t0))

            def recall(found):
                scores = [queries[q] @ vectors[np.asarray(sorted(set(f)), dtype=np.int64)].T for q, f in enumerate(found)]
                return recall_at_k(scores, exact_scores[: len(found), -1], args.k)

            out["qps"] = {m: round(statistics.median(v), 1) for m, v in timings.items()}
            out["recall@10"] = {m: round(recall(results[m]), 4) for m in results}
            out["ratios"] = {
                "index_batched_vs_numpy_batched_qps": round(out["qps"]["index_batched"] / out["qps"]["numpy_batched"], 3),
                "index_single_vs_numpy_single_qps": round(out["qps"]["index_single"] / out["qps"]["numpy_single"], 3),
                "index_batched_vs_single_qps": round(out["qps"]["index_batched"] / out["qps"]["index_single"], 3),
            }
            out["queries"] = {"batched": args.queries, "single": args.single_queries, "batch": args.batch, "rounds": args.rounds}
            out["exact_check"] = bool(np.array_equal(np.sort(exact_idx[0]), np.sort(np.asarray(results["numpy_batched"][0]))))
            store.client.drop_collection(name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
