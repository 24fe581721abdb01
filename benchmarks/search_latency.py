"""``POST /search`` latency under a bounded concurrent load on loopback, one run.

Builds a dataset (default preset), a randomly initialised 3-tower model and its Milvus Lite
index, starts ``vsearch serve`` as a separate process on 127.0.0.1, waits for ``/readyz``,
then sends ``--requests`` searches (street photos from the dataset, half with a
reformulation text) from ``--concurrency`` client threads, after ``--warmup`` requests.
Reports p50/p90/p99/max latency (ms), throughput and the error count (any non-200), and,
measured in the same run, the in-process ``Searcher.query`` latency (encode + Milvus search,
no HTTP) so the ratio shows what HTTP, multipart parsing and hydration add.

    python benchmarks/search_latency.py                          # 400 requests, concurrency 4
    python benchmarks/search_latency.py --preset tiny --requests 200

Prints one JSON object; the server is stopped at the end whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backfill_throughput import ensure_data, make_model  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p90": round(float(np.percentile(a, 90)), 2),
            "p99": round(float(np.percentile(a, 99)), 2), "max": round(float(a.max()), 2), "n": len(ms)}


def in_process_latency(model_dir: Path, db: Path, photos: list[bytes], n: int) -> list[float]:
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import connect
    from vsearch.serving.search import Searcher, decode_query_image

    cfg = load_index_config()
    out = []
    with connect(str(db), cfg) as store:
        searcher = Searcher(model_dir, "bench", store, cfg)
        searcher.prepare()
        for i in range(20):  # warm-up, as the HTTP run has
            searcher.query(decode_query_image(photos[i % len(photos)]), "", 10)
        for i in range(n):
            image = decode_query_image(photos[i % len(photos)])
            t0 = time.perf_counter()
            searcher.query(image, "in red" if i % 2 else "", 10)
            out.append((time.perf_counter() - t0) * 1000)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args(argv)

    import httpx
    import pandas as pd

    work = Path(tempfile.mkdtemp(prefix="vsearch-bench-serve-"))
    proc = None
    try:
        data_dir = ensure_data(args.data, args.preset, work)
        model_dir = make_model(data_dir, work / "model")
        db = work / "milvus.db"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DO_NOT_TRACK="1", TOKENIZERS_PARALLELISM="false")
        subprocess.run([sys.executable, "-m", "vsearch.cli", "index", "backfill", "--model", str(model_dir), "--data", str(data_dir),
                        "--milvus-uri", str(db), "--alias", "bench"], check=True, env=env, capture_output=True)
        inter = pd.read_parquet(data_dir / "interactions.parquet")
        photos = [(data_dir / u).read_bytes() for u in inter["query_image_uri"].head(200)]

        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "vsearch.cli", "serve", "--model", str(model_dir), "--alias", "bench",
                                 "--data", str(data_dir), "--milvus-uri", str(db), "--host", "127.0.0.1", "--port", str(port)],
                                env=dict(env, VSEARCH_LOG_LEVEL="warning"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready after 120 s")
            time.sleep(0.3)

        local = threading.local()

        def one(i: int) -> tuple[float, int]:
            client = getattr(local, "client", None) or httpx.Client(base_url=base, timeout=30)
            local.client = client
            data = {"k": str(args.k), "user_id": f"u{i}"}
            if i % 2:
                data["text"] = "in red"
            t0 = time.perf_counter()
            try:
                status = client.post("/search", files={"image": ("q.png", photos[i % len(photos)], "image/png")}, data=data).status_code
            except httpx.HTTPError:
                status = -1
            return (time.perf_counter() - t0) * 1000, status

        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, range(args.warmup)))
            t0 = time.perf_counter()
            results = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - t0
        proc.send_signal(signal.SIGTERM)  # frees the Lite db lock for the in-process measurement
        proc.wait(timeout=30)
        direct = in_process_latency(model_dir, db, photos, min(args.requests, 200))
        latencies = [ms for ms, _ in results]
        errors = sum(1 for _, s in results if s != 200)
        http = _percentiles(latencies)
        direct_p = _percentiles(direct)
        print(json.dumps({
            "benchmark": "search_latency", "preset": args.preset, "requests": args.requests, "concurrency": args.concurrency,
            "k": args.k, "errors": errors, "throughput_rps": round(args.requests / wall, 1),
            "http_ms": http, "in_process_query_ms": direct_p,
            "ratio_http_p50_vs_in_process_p50": round(http["p50"] / direct_p["p50"], 2),
            "note": "client threads and server share the same 2 cores; in-process = encode + Milvus search, sequential",
        }, indent=2))
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
