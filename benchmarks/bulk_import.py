"""Insert vs bulk import into a real Milvus 2.3.5 standalone server (PyPI ``milvus``), side by side.

Usage: .venv/bin/python benchmarks/bulk_import.py [--rows 50000] [--dim 128] [--shards 4] [--repeats 3]

Each repeat writes the same rows into two fresh collections with the schema the backfill uses
(``Store.create_collection``): *insert* = the sharded path's upserts in 1000-row batches + flush;
*bulk_import* = :func:`write_import_files` (Parquet, one per shard) + :func:`bulk_import` until every
task is Completed. Neither includes indexing (the same ``finalize_and_swap`` follows both).
The server runs in its own network namespace (``unshare -n``: loopback only). Prints JSON with
the median rows/s of each and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _run(args) -> dict:
    import milvus

    from vsearch.indexing.bulk import bulk_import, write_import_files
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import CATEGORY, PRIMARY, VECTOR, connect

    root = Path(tempfile.mkdtemp(prefix="vsearch-bulk-bench-"))
    template = Path(milvus.__file__).parent / "data" / "config.yaml.template"
    (root / "config.yaml.template").write_text(re.sub(r"(?m)^(\s*)ip:[^\n]*$", r"\1ip: 127.0.0.1", template.read_text()))
    config = milvus.MilvusServerConfig(template=str(root / "config.yaml.template"))
    config.glog_conf_file = str(template.parent / "glog.conf")
    server = milvus.MilvusServer(config, wait_for_started=False)
    server.show_startup_banner = False
    server.set_base_dir(str(root / "data"))
    server.start()
    try:
        server.wait_started(timeout=120_000)
        storage = Path(server.config.get("local_storage_dir"))
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((args.rows, args.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"p{i:09d}" for i in range(args.rows)]
        cats = [f"c{i % 17}" for i in range(args.rows)]
        bounds = np.linspace(0, args.rows, args.shards + 1).astype(int)
        shards = [(ids[a:b], vectors[a:b], cats[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        cfg = load_index_config()
        insert_rps, bulk_rps, bulk_write_s, bulk_import_s = [], [], [], []
        with connect(f"http://127.0.0.1:{server.listen_port}", cfg) as store:
            for rep in range(args.repeats):
                name = f"bench_insert_{rep}"
                store.create_collection(name, args.dim)
                t0 = time.perf_counter()
                for a in range(0, args.rows, 1000):
                    rows = [{PRIMARY: p, VECTOR: v, CATEGORY: c} for p, v, c in zip(ids[a : a + 1000], vectors[a : a + 1000].tolist(), cats[a : a + 1000])]
                    store.client.upsert(name, rows)
                store.client.flush(name)
                insert_rps.append(args.rows / (time.perf_counter() - t0))
                store.client.drop_collection(name)

                name = f"bench_bulk_{rep}"
                store.create_collection(name, args.dim)
                t0 = time.perf_counter()
                files = write_import_files(shards, storage / "imports" / name, dim=args.dim)
                t1 = time.perf_counter()
                rows = bulk_import(store, name, files, timeout_s=600, poll_s=0.2)
                t2 = time.perf_counter()
                assert sum(rows.values()) == args.rows, rows
                bulk_rps.append(args.rows / (t2 - t0))
                bulk_write_s.append(t1 - t0)
                bulk_import_s.append(t2 - t1)
                store.client.drop_collection(name)
                shutil.rmtree(storage / "imports" / name, ignore_errors=True)
        med = statistics.median
        return {
            "server": "milvus 2.3.5 standalone (PyPI milvus), loopback, common.storageType=local",
            "rows": args.rows, "dim": args.dim, "shards": args.shards, "repeats": args.repeats,
            "insert_rows_per_s": {"median": round(med(insert_rps)), "all": [round(x) for x in insert_rps]},
            "bulk_import_rows_per_s": {"median": round(med(bulk_rps)), "all": [round(x) for x in bulk_rps]},
            "bulk_write_files_s_median": round(med(bulk_write_s), 3),
            "bulk_import_tasks_s_median": round(med(bulk_import_s), 3),
            "ratio_bulk_over_insert": round(med(bulk_rps) / med(insert_rps), 2),
            "cpu_count": os.cpu_count(),
        }
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.in_namespace:  # re-run inside a loopback-only network namespace
        cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, __file__,
               *(argv if argv is not None else sys.argv[1:]), "--in-namespace"]
        return subprocess.run(cmd).returncode
    print(json.dumps(_run(args), indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
