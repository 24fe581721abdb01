"""Publishing output folders atomically: nothing under ``--out`` is ever half-written.

Work happens in a sibling staging folder; ``publish`` swaps it in with renames, keeping
the previous contents until the new folder is in place.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def staging_path(out: str | os.PathLike, tag: str = "partial") -> Path:
    """The sibling folder where a stage writes before publishing: ``<out>.<tag>``."""
    out = Path(out)
    return out.with_name(f"{out.name}.{tag}")


def publish(staging: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Replace ``out`` by ``staging`` (rename; the old ``out`` is removed only afterwards)."""
    staging, out = Path(staging), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def fresh_staging(out: str | os.PathLike, tag: str = "partial") -> Path:
    """An empty staging folder next to ``out`` (a leftover one from a crash is cleared)."""
    staging = staging_path(out, f"{tag}-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    return staging


def model_version(model_dir: str | os.PathLike) -> str:
    """A stable, content-derived id for a saved model: ``<towers>t-<sha256(weights)[:12]>``.

    Names the Milvus collection a backfill writes, and identifies candidates and champions
    in blessings, the registry and rollout configs. Same weights -> same id, anywhere.
    """
    import hashlib
    import json

    import fsspec

    # A local folder or an fsspec URI (s3://bucket/models/x): the same bytes give the same id.
    root = str(model_dir).rstrip("/")
    with fsspec.open(f"{root}/vsearch_model.json", "rb") as fh:
        meta = json.loads(fh.read().decode())
    digest = hashlib.sha256()
    with fsspec.open(f"{root}/model.safetensors", "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f"{len(meta['model']['towers'])}t-{digest.hexdigest()[:12]}"


def is_model_dir(uri: str | os.PathLike) -> bool:
    """True when ``uri`` (a folder or fsspec URI) holds a saved vsearch model."""
    import fsspec

    root = str(uri).rstrip("/")
    fs, path = fsspec.core.url_to_fs(root)
    return fs.isfile(f"{path}/vsearch_model.json") and fs.isfile(f"{path}/model.safetensors")
