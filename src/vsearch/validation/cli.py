"""``vsearch data validate --data DIR --out DIR``: validate a data folder, write JSON + HTML.

Exit status: 0 when every check passes; 2 when the data fails validation (one line per
failed check on stderr, naming the file, the rule and the offending rows; the report is
still written) or for a usage error, as every vsearch command does for bad input. The output folder is published atomically (staging +
rename): a previous report is replaced only by a complete new one. Besides validation.json
and our offline validation.html it holds GX's own Data Docs in ``gx_data_docs/`` (skip with
``--no-data-docs``).
"""

from __future__ import annotations

import argparse
import json
import sys

from vsearch import artifacts
from vsearch.validation.suites import ValidationConfig


def main(argv: list[str] | None = None) -> int:
    defaults = ValidationConfig()
    parser = argparse.ArgumentParser(prog="vsearch data validate", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data folder (catalog.parquet, interactions.parquet, ...); read only")
    parser.add_argument("--out", required=True, help="report folder: validation.json, validation.html, gx_data_docs/")
    parser.add_argument("--min-image-size", type=int, default=defaults.min_image_size, help="smallest image side, px (default %(default)s)")
    parser.add_argument("--max-title-chars", type=int, default=defaults.max_title_chars, help="longest title (default %(default)s)")
    parser.add_argument("--min-categories", type=int, default=defaults.min_categories, help="fewest catalog categories (default %(default)s)")
    parser.add_argument("--max-category-share", type=float, default=defaults.max_category_share,
                        help="largest share of the catalog one category may take (default %(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="image-probing processes (default min(2, cpus))")
    parser.add_argument("--max-examples", type=int, default=defaults.max_examples, help="offending examples kept per check")
    parser.add_argument("--no-data-docs", dest="data_docs", action="store_false",
                        help="do not build GX Data Docs (gx_data_docs/, CDN-styled HTML; about a second)")
    args = parser.parse_args(argv)

    from vsearch.validation.report import DATA_DOCS_DIR, write_report
    from vsearch.validation.validate import validate_dataset

    cfg = ValidationConfig(args.min_image_size, args.max_title_chars, args.min_categories, args.max_category_share,
                           args.workers, args.max_examples)
    artifacts.check_out(args.out, [args.data], ours=("validation.json",))
    with artifacts.staged(args.out) as staging:
        # GX Data Docs are built from the run's GX context, straight into the staging folder.
        result = validate_dataset(args.data, cfg, data_docs_dir=staging / DATA_DOCS_DIR if args.data_docs else None)
        write_report(result, staging)
    stats = result.statistics
    print(json.dumps({"success": result.success, "checks": stats["checks"], "failed": stats["failed"],
                      "rows": stats["rows"], "images": stats["images"], "seconds": stats["seconds"], "out": str(args.out)}))
    for check in result.failures:
        print(f"vsearch data validate: {check.line()}", file=sys.stderr)
    return 0 if result.success else 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
