"""How a command ends on bad input: one line on stderr, exit status 2, never a traceback.

Bad input (DataError, a missing file) and bad configs (ConfigError, broken YAML or JSON) end
with one line of at most ``MAX_ERROR_CHARS`` characters. ``vsearch <command>`` runs every
stage's ``main(argv)`` through ``run_stage``, and so does a stage started on its own
(``torchrun -m vsearch.training.loop``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

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


def run_stage(command: str, main: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """``main(argv)``'s exit status; bad input or a bad config: its ``error_line`` on stderr and 2."""
    import json

    import yaml

    from vsearch.config import ConfigError
    from vsearch.schema import DataError

    try:
        return int(main(argv) or 0)
    except (DataError, ConfigError, yaml.YAMLError, json.JSONDecodeError,
            FileNotFoundError, NotADirectoryError, IsADirectoryError) as err:
        # Broken YAML/JSON and missing paths: bad input too, whichever loader met it first.
        print(error_line(command, err), file=sys.stderr)
        return 2
