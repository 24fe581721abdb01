"""The blessing: the gate's verdict on one candidate, as a typed record (one module: type, read, write).

``vsearch gate`` writes it (``blessing.json``); the registry promotes only through it; the
rollout writer, the release lifecycle and the pipeline components read it. Models are named
by their durable URI (a local folder, or an fsspec URI such as ``s3://bucket/models/x``: the
KFP artifact's ``uri``, never the path it happened to be mounted at in one pod) and by their
content version (`vsearch.artifacts.model_version`).

Schema version 2 renamed ``model_dir`` to ``model_uri``; version-1 files still read.
``lineage`` (``{code_version, run_id}``, `vsearch.lineage`) names the code and the KFP run
that judged; blessings written before it read with an empty one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vsearch import artifacts

BLESSING_FILE = "blessing.json"
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class ModelRef:
    """A model as the gate saw it.

    Attributes:
        name: its name in the evaluation (``four_tower``, ``image_only`` ...).
        model_uri: durable URI of the model folder (None when unknown).
        version: content version (``4t-0123abcd4567``); None when the folder was not readable.
        evaluation: where its per-query values came from.
    """

    name: str
    model_uri: str | None
    version: str | None
    evaluation: str | None = None

    @classmethod
    def from_dict(cls, raw: Mapping, where: str, what: str) -> ModelRef:
        from vsearch.schema import DataError

        if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
            raise DataError(where, f"blessing '{what}' must be a mapping with a 'name'")
        uri = raw.get("model_uri", raw.get("model_dir"))  # schema 1 called it model_dir
        return cls(raw["name"], None if uri is None else str(uri), raw.get("version"), raw.get("evaluation"))


@dataclass(frozen=True)
class Blessing:
    """The gate's decision on ``candidate`` (see `vsearch.evaluation.gate`).

    ``checks`` are the gate's check results as dicts (name, status, detail, numbers);
    ``comparisons`` holds every paired metric difference, by reference (baseline, champion).
    ``lineage`` is ``{"code_version": ..., "run_id": ...}`` of the gate (empty in older files).
    """

    blessed: bool
    reason: str
    candidate: ModelRef
    created_at: str = ""
    baseline: ModelRef | None = None
    champion: ModelRef | None = None
    champion_lookup: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    gate: dict = field(default_factory=dict)
    checks: tuple[dict, ...] = ()
    comparisons: dict = field(default_factory=dict)
    lineage: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def has_champion(self) -> bool:
        return self.champion is not None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["checks"] = list(self.checks)
        # Field order of the file: verdict first, for a human opening it.
        order = ["schema_version", "blessed", "reason", "created_at", "lineage", "candidate", "baseline", "champion"]
        return {k: out[k] for k in order} | {k: v for k, v in out.items() if k not in order}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "blessing.json") -> Blessing:
        """Validate a parsed blessing.json (DataError naming ``where`` on any violation)."""
        from vsearch.schema import DataError

        if not isinstance(raw, Mapping) or not isinstance(raw.get("blessed"), bool) or not isinstance(raw.get("candidate"), Mapping):
            raise DataError(where, "not a blessing (needs 'blessed' and 'candidate')")
        if raw.get("schema_version", 1) not in (1, SCHEMA_VERSION):
            raise DataError(where, f"unknown blessing schema_version {raw.get('schema_version')!r}")
        checks = raw.get("checks") or []
        if not isinstance(checks, list) or not all(isinstance(c, Mapping) for c in checks):
            raise DataError(where, "blessing 'checks' must be a list of mappings")
        if not isinstance(raw.get("lineage") or {}, Mapping):
            raise DataError(where, "blessing 'lineage' must be a mapping")

        def ref(key: str) -> ModelRef | None:
            return None if raw.get(key) is None else ModelRef.from_dict(raw[key], where, key)

        return cls(
            blessed=raw["blessed"],
            reason=str(raw.get("reason", "")),
            candidate=ModelRef.from_dict(raw["candidate"], where, "candidate"),
            created_at=str(raw.get("created_at", "")),
            baseline=ref("baseline"),
            champion=ref("champion"),
            champion_lookup=dict(raw.get("champion_lookup") or {}),
            data=dict(raw.get("data") or {}),
            gate=dict(raw.get("gate") or {}),
            checks=tuple(dict(c) for c in checks),
            comparisons=dict(raw.get("comparisons") or {}),
            lineage=dict(raw.get("lineage") or {}),
        )


def blessing_path(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/blessing.json`` when it is a folder."""
    path = Path(path)
    return path / BLESSING_FILE if path.is_dir() else path


def read_blessing(path: str | os.PathLike) -> Blessing:
    """Read a blessing.json (a file, or a folder that holds one); DataError if missing or malformed."""
    from vsearch.schema import DataError

    path = blessing_path(path)
    if not path.is_file():
        raise DataError(path, "blessing file is missing")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(path, "not valid JSON", detail=str(err)) from err
    return Blessing.from_dict(raw, str(path))


def write_blessing(blessing: Blessing, out_dir: str | os.PathLike) -> Path:
    """Write ``<out_dir>/blessing.json`` atomically (temp file + rename)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / BLESSING_FILE
    with artifacts.staged_file(path) as tmp:
        tmp.write_text(json.dumps(blessing.to_dict(), indent=2))
    return path


def remove_blessing(out_dir: str | os.PathLike) -> None:
    """Delete a previous ``blessing.json`` in ``out_dir``: a gate that then fails leaves none behind."""
    (Path(out_dir) / BLESSING_FILE).unlink(missing_ok=True)
