"""Lineage: which code, which KFP run and which data a durable record comes from.

Every record that outlives its step (the blessing, the gate page, the rollout plan, the
rejection, the registry's champion, a model's ``train_summary.json``) says which code wrote
it; the records a pipeline run writes also name the run (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``,
passed only to uncached steps: a run id in a cached step's inputs would end its caching).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

CODE_VERSION_ENV = "VSEARCH_CODE_VERSION"
# What the images carry when built without a revision (dockerfiles/Dockerfile: ARG VCS_REF=unknown).
_UNSET = {"", "unknown"}


def _git(source: Path, *args: str) -> str | None:
    """``git -C source args`` stdout, or None when git is absent, fails or hangs."""
    try:
        done = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=5,
                              check=True, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def code_version(env: Mapping[str, str] | None = None, source: str | os.PathLike | None = None) -> str:
    """The version of the code running now, for lineage records.

    In order: ``$VSEARCH_CODE_VERSION`` (the images set it from the git SHA they were built
    from); else ``git rev-parse HEAD`` of the checkout this package runs from, with
    ``-dirty`` when tracked files differ from it; else ``vsearch <package version>``. Never
    raises: no git, no checkout and no metadata all give an answer.

    Args:
        env: the environment to read (default ``os.environ``).
        source: the folder to ask git about (default: this package's folder).
    """
    value = (os.environ if env is None else env).get(CODE_VERSION_ENV, "").strip()
    if value not in _UNSET:
        return value
    folder = Path(source) if source is not None else Path(__file__).resolve().parent
    sha = _git(folder, "rev-parse", "--verify", "HEAD")
    if sha:
        changes = _git(folder, "status", "--porcelain", "--untracked-files=no")
        return sha + ("-dirty" if changes else "")
    return f"vsearch {_package_version()}"


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vsearch")
    except PackageNotFoundError:
        from vsearch import __version__

        return __version__


def lineage(run_id: str | None = None) -> dict[str, str | None]:
    """``{"code_version": ..., "run_id": ...}`` for a record written now (run_id None outside a run)."""
    return {"code_version": code_version(), "run_id": run_id or None}


def data_fingerprint(data_dir: str | os.PathLike | None) -> str | None:
    """sha256 (first 16 hex) over the manifests of a data folder (local or fsspec URI); None if it is not there.

    The manifests name every image by URI, so a changed dataset changes them; an image
    replaced in place under the same URI is outside the data contract.
    """
    import fsspec

    from vsearch import schema

    if not data_dir:
        return None
    fs, root = fsspec.core.url_to_fs(str(data_dir))
    if not fs.isdir(root):
        return None
    digest = hashlib.sha256()
    for name in (schema.CATALOG_FILE, schema.INTERACTIONS_FILE, schema.REFORMULATIONS_FILE):
        path = f"{root.rstrip('/')}/{name}"
        if fs.isfile(path):
            digest.update(name.encode() + b"\0" + fs.cat_file(path))
    return digest.hexdigest()[:16]
