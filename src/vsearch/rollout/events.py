"""A/B evidence on disk: the impression and click logs of the search service.

Two append-only JSON-lines files in one folder (``vsearch serve --events DIR``; next to the
rollout file by default):

- ``impressions.jsonl``: one line per answered (or failed) ``/search``: ``ts`` (unix seconds),
  ``request_id``, ``experiment_id``, ``arm``, ``user_id``, ``query`` (sha256 of the photo and
  text, never the photo), ``k``, ``model_version``, ``collection``, ``results`` (product ids,
  best first), ``latency_ms``, ``status`` (HTTP), ``treatment_percent`` (the share in force).
- ``clicks.jsonl``: one line per ``POST /click``: ``ts``, ``request_id``, ``user_id``,
  ``product_id``, ``type`` (``click`` | ``add_to_cart``).

Files are opened in append mode and each record is one ``write`` of one line, flushed: a
restart (or a crash) keeps everything already answered, and never truncates. `read_events`
skips a torn last line (a crash mid-write) rather than failing the analysis.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

IMPRESSIONS = "impressions.jsonl"
CLICKS = "clicks.jsonl"
CLICK_TYPES = ("click", "add_to_cart")


class EventLog:
    """Appends impressions and clicks (thread-safe; one process per folder)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._files = {name: open(self.folder / name, "a", encoding="utf-8") for name in (IMPRESSIONS, CLICKS)}

    def _append(self, name: str, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=True) + "\n"
        with self._lock:
            fh = self._files[name]
            fh.write(line)
            fh.flush()

    def impression(self, record: dict) -> None:
        self._append(IMPRESSIONS, record)

    def click(self, record: dict) -> None:
        self._append(CLICKS, record)

    def close(self) -> None:
        with self._lock:
            for fh in self._files.values():
                fh.close()


def read_jsonl(path: Path) -> list[dict]:
    """Records of one log; a torn final line (crash mid-write) is skipped, any other bad line is DataError."""
    from vsearch.schema import DataError

    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:  # no trailing newline: the writer died mid-line
                break
            raise DataError(path, "not a JSON line", i, str(err)) from err
        if not isinstance(record, dict):
            raise DataError(path, "expected a JSON object per line", i)
        out.append(record)
    return out


def read_events(folder: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """(impressions, clicks) of an events folder."""
    folder = Path(folder)
    return read_jsonl(folder / IMPRESSIONS), read_jsonl(folder / CLICKS)
