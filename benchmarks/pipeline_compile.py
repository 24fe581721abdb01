"""Pipeline compile time: every pipeline, each in a fresh interpreter, median of N rounds.

The "Done" bar of the pipelines issue is "compiling every pipeline takes under 30 s". A
fresh process per round measures what a user waits for (`vsearch pipeline compile`:
interpreter start, kfp import, build, compile, strict check, write), side by side with the
bare import of kfp, interleaved round by round on the shared machine.

    python benchmarks/pipeline_compile.py [--rounds 5]

Prints one JSON object (seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    compile_s, import_s = [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.rounds):
            import_s.append(_timed([sys.executable, "-c", "import kfp.dsl, kfp.compiler, kfp.kubernetes"]))
            compile_s.append(_timed([sys.executable, "-m", "vsearch.cli", "pipeline", "compile", "--out", out]))
        sys.path.insert(0, str(ROOT))
        from pipelines.compiler import PIPELINES

        names = sorted(PIPELINES)
        sizes = {n: (Path(out) / f"{n}.yaml").stat().st_size for n in names}
    median_compile, median_import = statistics.median(compile_s), statistics.median(import_s)
    print(json.dumps({
        "pipelines": names,
        "yaml_bytes": sizes,
        "rounds": args.rounds,
        "compile_all_cli_s_median": round(median_compile, 3),
        "kfp_import_s_median": round(median_import, 3),
        "compile_over_import_ratio": round(median_compile / median_import, 2),
        "budget_s": 30,
    }, indent=2))


if __name__ == "__main__":
    main()
