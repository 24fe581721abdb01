"""Publishing output folders atomically: nothing under ``--out`` is ever half-written.

Work happens in a sibling staging folder; ``publish`` swaps it in with renames, keeping
the previous contents until the new folder is in place, and leaves a marker file in every
folder it publishes. ``check_out`` is the one rule every command applies to its ``--out``
before doing any work: an output never overlaps an input, and never replaces a folder
this tool did not write.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from vsearch import faults
from vsearch.model_folder import CONFIG_FILE, WEIGHTS_FILE


def staging_path(out: str | os.PathLike, tag: str = "partial") -> Path:
    """The sibling folder where a stage writes before publishing: ``<out>.<tag>``."""
    out = Path(out)
    return out.with_name(f"{out.name}.{tag}")


# Written by ``publish`` into every folder it publishes: "this tool wrote it", so a later
# run may replace it. A folder without it (and without a file the command itself writes)
# is somebody else's and is never replaced.
MARKER = ".vsearch-output"


def mark(folder: str | os.PathLike) -> None:
    """Write the marker that says ``folder`` is an output of this tool."""
    (Path(folder) / MARKER).write_text("written by vsearch; a later run may replace this folder\n")


def _old_copies(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{glob.escape(out.name)}.old-*"))


def recover(out: str | os.PathLike) -> None:
    """Undo what a kill inside ``publish`` or a stage left next to ``out``.

    A kill between publish's two renames leaves ``out`` missing and the previous output
    as ``.<out>.old-*``: it is renamed back. Staging folders ``<out>.partial-*`` of killed
    runs are removed (the training loop's resumable ``<out>.partial`` is not touched).
    """
    out = Path(out)
    olds = _old_copies(out)
    if olds and not out.exists():
        os.replace(olds[-1], out)
        olds = olds[:-1]
    for leftover in [*olds, *out.parent.glob(f"{glob.escape(out.name)}.partial-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_out(out: str | os.PathLike, inputs=(), *, ours: tuple[str, ...] = ()) -> Path:
    """Refuse an ``--out`` that would destroy something; call before doing any work.

    Args:
        out: the output folder of a command.
        inputs: every input path of the command (data, model, snapshot, config folders;
            None and ``scheme://`` URIs are skipped).
        ours: file or folder names the command itself writes into ``out``: an existing
            ``out`` holding one (written by a version of the tool before the marker) may be
            replaced too.

    Returns:
        ``out`` as a Path, after leftovers of a killed run next to it were cleaned up.

    Raises:
        DataError: ``out`` is, contains or lies inside an input; or it exists and is a file,
            or a non-empty folder without the marker and without any of ``ours``.
    """
    from vsearch.schema import DataError

    out = Path(out)
    target = out.resolve()
    for item in inputs:
        if item is None or "://" in str(item):
            continue
        source = Path(item).resolve()
        if _overlaps(target, source):
            how = "is" if target == source else "contains" if target in source.parents else "lies inside"
            raise DataError(out, f"--out {how} the input {item}; an output never replaces an input, choose another --out")
    recover(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DataError(out, "--out exists and is not a folder; refusing to replace it")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file() and not any((out / name).exists() for name in ours):
            raise DataError(out, "--out is a non-empty folder this tool did not write; refusing to replace it (choose an empty or new folder)")
    return out


def publish(staging: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Replace ``out`` by ``staging`` (rename; the old ``out`` is removed only afterwards).

    A kill at any instant leaves either the previous ``out``, or ``out`` missing with the
    previous one as ``.<out>.old-*`` (``recover`` renames it back), or the new ``out``.
    """
    staging, out = Path(staging), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    mark(staging)
    for leftover in _old_copies(out):  # an earlier publish killed after its second rename
        shutil.rmtree(leftover, ignore_errors=True)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
    faults.fault_point("publish")  # test-only: a kill between the two renames
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
    recover(out)
    staging = staging_path(out, f"{tag}-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    return staging


@contextlib.contextmanager
def staged(out: str | os.PathLike, tag: str = "partial") -> Iterator[Path]:
    """Write a folder output: ``with staged(out) as staging:`` fills a fresh staging folder
    next to ``out``, which is published (``publish``) when the block ends and removed when it
    raises, so ``out`` is the previous output or the complete new one, never half of one."""
    staging = fresh_staging(out, tag)
    try:
        yield staging
        publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file output: ``with staged_file(path) as tmp:`` writes a temporary sibling
    (``.<name>.tmp-<pid>``), renamed over ``path`` when the block ends and removed when it
    raises. The parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def durable_uri(location: str | os.PathLike) -> str:
    """``location`` as a durable record (blessing, registry, rollout, index, summary) names it.

    An fsspec URI stays as it is, except KFP's ``minio://`` (its default pipeline root), which
    is ``s3://`` on the same bucket: KServe's storage initializer and s3fs know no ``minio://``.
    A local path is made absolute. Pass a KFP artifact's ``uri``, never its ``path``: on a
    cluster the path is where one pod mounted the object.
    """
    text = str(location)
    if text.startswith("minio://"):
        return "s3://" + text[len("minio://"):]
    return text if "://" in text else str(Path(text).resolve())


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
    with fsspec.open(f"{root}/{CONFIG_FILE}", "rb") as fh:
        meta = json.loads(fh.read().decode())
    digest = hashlib.sha256()
    with fsspec.open(f"{root}/{WEIGHTS_FILE}", "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f"{len(meta['model']['towers'])}t-{digest.hexdigest()[:12]}"


def model_embed_dim(model_dir: str | os.PathLike) -> int | None:
    """The embedding dimension a saved model writes (vsearch_model.json; folder or fsspec URI);
    None when the URI is not readable from here (e.g. another pod's artifact store)."""
    import json

    import fsspec

    try:
        with fsspec.open(f"{str(model_dir).rstrip('/')}/{CONFIG_FILE}", "rb") as fh:
            return int(json.loads(fh.read().decode())["model"]["embed_dim"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_model_dir(uri: str | os.PathLike) -> bool:
    """True when ``uri`` (a folder or fsspec URI) holds a saved vsearch model."""
    import fsspec

    root = str(uri).rstrip("/")
    fs, path = fsspec.core.url_to_fs(root)
    return fs.isfile(f"{path}/{CONFIG_FILE}") and fs.isfile(f"{path}/{WEIGHTS_FILE}")


def fetch_model(uri: str | os.PathLike, out: str | os.PathLike, *, expected_version: str | None = None) -> tuple[Path, bool]:
    """Copy the model folder at ``uri`` (a folder or fsspec URI) to the local folder ``out``.

    The copy is published whole (``staged``): a kill mid-download leaves the previous ``out``.
    With ``expected_version`` the copy must have that content id (`model_version`): a folder
    changed after it was recorded is refused, and an ``out`` that already holds that version
    is kept as it is (nothing downloaded).

    Returns:
        (``out``, whether anything was downloaded).

    Raises:
        DataError: ``uri`` is not a model folder, a listed file lies outside it, or its content
            is not ``expected_version``.
    """
    import posixpath

    import fsspec

    from vsearch.schema import DataError

    out = Path(out)
    if expected_version is not None and is_model_dir(out) and model_version(out) == expected_version:
        return out, False
    if not is_model_dir(uri):
        raise DataError(uri, f"not a vsearch model folder ({CONFIG_FILE} + {WEIGHTS_FILE})")
    fs, root = fsspec.core.url_to_fs(str(uri).rstrip("/"))
    root = root.rstrip("/")
    with staged(out) as staging:
        for path in fs.find(root):
            rel = posixpath.relpath(str(path), root)
            if rel == MARKER:
                continue
            if rel.startswith("../") or rel == ".." or posixpath.isabs(rel):
                raise DataError(uri, "a listed file lies outside the model folder", detail=str(path))
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(dest))
        got = model_version(staging)
        if expected_version is not None and got != expected_version:
            raise DataError(uri, "the model folder is not the one recorded: its weights changed after it was promoted",
                            detail=f"content {got}, recorded {expected_version}")
    return out, True
