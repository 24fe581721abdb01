"""``vsearch features build-training-set | materialize | lookup``.

    vsearch features build-training-set --data DIR --out DIR [--repo DIR]
    vsearch features materialize --data DIR --repo DIR [--end ISO8601]
    vsearch features lookup --repo DIR PRODUCT_ID [PRODUCT_ID ...]

Each prints one JSON object on stdout. Bad data (DataError) and bad settings (ConfigError)
end with one line and exit 2 (vsearch.cli).
"""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vsearch features", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build-training-set", help="point-in-time join of clicks with product features -> a data folder for `vsearch train`")
    build.add_argument("--data", required=True, help="source data folder (read only)")
    build.add_argument("--out", required=True, help="training-set folder to publish (replaced atomically)")
    build.add_argument("--repo", default=None, help="working Feast repo to keep (default: a temporary one)")
    mat = sub.add_parser("materialize", help="write the working Feast repo for a data folder and load the online store")
    mat.add_argument("--data", required=True, help="data folder (read only)")
    mat.add_argument("--repo", required=True, help="working Feast repo (registry, SQLite online store by default)")
    mat.add_argument("--end", default=None, help="materialize product versions up to this UTC time (default: now)")
    look = sub.add_parser("lookup", help="online features of products: title, image_uri, category")
    look.add_argument("--repo", required=True, help="working Feast repo written by `materialize`")
    look.add_argument("product_ids", nargs="+")
    args = parser.parse_args(argv)

    if args.command == "build-training-set":
        from vsearch import artifacts
        from vsearch.features.training_set import build_training_set

        artifacts.check_out(args.out, [args.data, args.repo], ours=("catalog.parquet",))
        summary = build_training_set(args.data, args.out, args.repo)
    elif args.command == "materialize":
        from vsearch.features.online import materialize

        end = pd.Timestamp(args.end, tz="UTC").to_pydatetime() if args.end else None
        summary = materialize(args.data, args.repo, end)
    else:
        from vsearch.features.online import lookup_products

        summary = lookup_products(args.repo, args.product_ids)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
