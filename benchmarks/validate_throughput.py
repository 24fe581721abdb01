"""Validation throughput on the default preset: rows/s, images/s, total seconds (JSON).

    python benchmarks/validate_throughput.py [--data DIR] [--repeats 3] [--workers N]

Generates the default preset (seed 0, ~10 s) into a temporary folder unless --data is given,
then runs the full validation (every image probed and decoded, all GX suites) ``--repeats``
times and reports medians; also the image probing alone with 1 worker vs the pool, side by
side in the same run, so the pool's speed-up is a ratio measured on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="an existing data folder (default: generate the default preset)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="image-probing processes (default min(2, cpus))")
    args = parser.parse_args(argv)

    from vsearch import schema
    from vsearch.validation import images
    from vsearch.validation.suites import ValidationConfig
    from vsearch.validation.validate import validate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "default"
        synth_seconds = None
        if args.data is None:
            from vsearch.data.synth import generate

            synth_seconds = generate(data, "default", seed=0)["seconds"]
        t0 = time.perf_counter()
        import great_expectations  # noqa: F401  (import cost reported apart, paid once per process)

        import_seconds = time.perf_counter() - t0
        runs = []
        for _ in range(args.repeats):
            result = validate_dataset(data, ValidationConfig(workers=args.workers))
            runs.append(result.statistics)
        uris = []
        for name in (schema.CATALOG_FILE, schema.INTERACTIONS_FILE):
            import pandas as pd

            df = pd.read_parquet(data / name)
            uris += list(df[schema.URI_COLUMNS[name][0]])
        serial, pooled = [], []
        for _ in range(args.repeats):  # interleaved: 1 worker vs the pool, same files, same run
            t = time.perf_counter()
            images.probe_images(data, uris, workers=1)
            serial.append(time.perf_counter() - t)
            t = time.perf_counter()
            images.probe_images(data, uris, workers=args.workers)
            pooled.append(time.perf_counter() - t)

    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    rows = sum(runs[0]["rows"].values())
    print(json.dumps({
        "preset": "default" if args.data is None else str(args.data),
        "cpus": os.cpu_count(),
        "repeats": args.repeats,
        "success": bool(result.success),
        "rows": rows,
        "images": runs[0]["images"],
        "checks": runs[0]["checks"],
        "seconds_median": round(med("seconds"), 3),
        "image_seconds_median": round(med("image_seconds"), 3),
        "gx_seconds_median": round(med("gx_seconds"), 3),
        "rows_per_s_median": round(rows / med("seconds"), 1),
        "images_per_s_median": round(runs[0]["images"] / med("image_seconds"), 1),
        "gx_import_seconds": round(import_seconds, 3),
        "synth_seconds": synth_seconds,
        "probe_1_worker_seconds_median": round(statistics.median(serial), 3),
        "probe_pool_seconds_median": round(statistics.median(pooled), 3),
        "pool_speedup": round(statistics.median(serial) / statistics.median(pooled), 2),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
