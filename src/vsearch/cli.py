"""One CLI, one subcommand per stage: ``vsearch data synth | train | evaluate | demo | ...``.

Each subcommand is the ``main(argv)`` of its stage module. Bad input (DataError, a missing
file) and bad configs (ConfigError, broken YAML) end with one line of at most
``MAX_ERROR_CHARS`` characters on stderr and exit status 2, never a traceback
(``vsearch.errors.run_stage``).
"""

from __future__ import annotations

import importlib
import sys

from vsearch.errors import run_stage

COMMANDS = {
    ("data", "synth"): ("vsearch.data.synth", "generate the street-to-shop benchmark"),
    ("train",): ("vsearch.training.loop", "train image-only / 3-tower / 4-tower"),
    ("evaluate",): ("vsearch.evaluation.evaluate", "evaluate models, write metrics.json and report.html"),
    ("demo",): ("vsearch.demo", "synth -> train three models -> evaluate, end to end"),
    ("data", "import"): ("vsearch.data.importer", "build the data contract from an image folder + CSV/JSONL tables"),
    ("data", "validate"): ("vsearch.validation.cli", "validate a dataset (Great Expectations), JSON + HTML summary"),
    ("features",): ("vsearch.features.cli", "Feast: build-training-set | materialize | lookup"),
    ("index",): ("vsearch.indexing.cli", "Milvus: backfill | rollback | gc | status"),
    ("search",): ("vsearch.serving.search", "search the index with a photo (+ reformulation text)"),
    ("serve",): ("vsearch.serving.app", "HTTP search service (FastAPI) with A/B routing and a web page"),
    ("gate",): ("vsearch.evaluation.gate", "bless or reject a candidate vs baseline and champion"),
    ("registry",): ("vsearch.registry", "champion registry: show | history | fetch | promote | rollback"),
    ("rollout",): ("vsearch.rollout.writer", "write rollout.yaml + the per-arm KServe manifests from a blessing"),
    ("rollout", "analyze"): ("vsearch.rollout.analyze", "A/B evidence: per-arm CTR + CI, guardrails, recommendation, HTML"),
    ("release",): ("vsearch.release.cli", "release lifecycle: status | approve | ramp | promote | rollback"),
    ("drift",): ("vsearch.monitoring.drift", "Evidently drift report: exit 0 (no drift) or 3 (drift)"),
    ("pipeline",): ("pipelines.cli", "Kubeflow: compile | run-local | submit | schedule"),
}


def _usage() -> str:
    lines = ["usage: vsearch <command> [options]", "", "commands:"]
    lines += [f"  {' '.join(words):<16} {help_}" for words, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    for words, (module, _) in sorted(COMMANDS.items(), key=lambda kv: -len(kv[0])):
        if tuple(argv[: len(words)]) == words:
            stage = importlib.import_module(module)
            return run_stage(" ".join(words), stage.main, argv[len(words) :])
    print(f"vsearch: unknown command '{' '.join(argv[:2])}'\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
