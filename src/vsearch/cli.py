"""One CLI, one subcommand per stage: ``vsearch data synth | train | evaluate | demo | ...``.

Each subcommand is the ``main(argv)`` of its stage module. Bad input (DataError, a missing
file) and bad configs (ConfigError, broken YAML) end with one line of at most
``MAX_ERROR_CHARS`` characters on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    ("data", "synth"): ("vsearch.data.synth", "generate the street-to-shop benchmark"),
    ("train",): ("vsearch.training.loop", "train image-only / 3-tower / 4-tower"),
    ("evaluate",): ("vsearch.evaluation.evaluate", "evaluate models, write metrics.json and report.html"),
    ("demo",): ("vsearch.demo", "synth -> train three models -> evaluate, end to end"),
    ("data", "validate"): ("vsearch.validation.cli", "validate a dataset (Great Expectations), JSON + HTML summary"),
    ("features",): ("vsearch.features.cli", "Feast: build-training-set | materialize | lookup"),
    ("index",): ("vsearch.indexing.cli", "Milvus: backfill | rollback | gc | status"),
    ("search",): ("vsearch.serving.search", "search the index with a photo (+ reformulation text)"),
    ("serve",): ("vsearch.serving.app", "HTTP search service (FastAPI) with A/B routing and a web page"),
    ("gate",): ("vsearch.evaluation.gate", "bless or reject a candidate vs baseline and champion"),
    ("registry",): ("vsearch.registry", "champion registry: show | promote | rollback | history"),
    ("rollout",): ("vsearch.rollout.writer", "write rollout.yaml + the per-arm KServe manifests from a blessing"),
    ("rollout", "analyze"): ("vsearch.rollout.analyze", "A/B evidence: per-arm CTR + CI, guardrails, recommendation, HTML"),
    ("release",): ("vsearch.release.cli", "release lifecycle: status | approve | ramp | promote | rollback"),
    ("drift",): ("vsearch.monitoring.drift", "Evidently drift report: exit 0 (no drift) or 3 (drift)"),
    ("pipeline",): ("pipelines.cli", "Kubeflow: compile | run-local | submit | schedule"),
}


MAX_ERROR_CHARS = 300


def _cut(text: str, limit: int) -> str:
    text = " ".join(str(text).split())  # one line, whatever the message held
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def error_line(command: str, err: BaseException) -> str:
    """The one stderr line for ``err``: at most MAX_ERROR_CHARS characters. A DataError keeps
    its file, row and rule whole where it can and gives up the detail (a value) first."""
    from vsearch.schema import DataError

    head = f"vsearch {command}: error: "
    room = MAX_ERROR_CHARS - len(head)
    if isinstance(err, DataError):
        path = _cut(err.path, 120)
        where = path + (f", row {err.row}" if err.row is not None else "")
        rule = _cut(err.rule, max(60, room - len(where) - 2))
        body = f"{where}: {rule}"
        if err.detail and room - len(body) > 12:
            body += f" ({_cut(err.detail, room - len(body) - 3)})"
        return head + _cut(body, room)
    if isinstance(err, OSError) and err.filename is not None:
        return head + _cut(f"{_cut(err.filename, 120)}: {err.strerror or type(err).__name__}", room)
    return head + _cut(str(err), room)


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
            import json

            import yaml

            from vsearch.config import ConfigError
            from vsearch.schema import DataError

            try:
                return int(stage.main(argv[len(words) :]) or 0)
            except (DataError, ConfigError, yaml.YAMLError, json.JSONDecodeError,
                    FileNotFoundError, NotADirectoryError, IsADirectoryError) as err:
                # Broken YAML/JSON and missing paths: bad input too, whichever loader met it first.
                print(error_line(" ".join(words), err), file=sys.stderr)
                return 2
    print(f"vsearch: unknown command '{' '.join(argv[:2])}'\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
