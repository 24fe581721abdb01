"""Milvus bulk import: backfills beyond insert rates.

At a billion rows the insert path (every row through the proxy and the message queue) is the
wrong tool. Milvus bulk import reads files from the object storage Milvus itself uses and
builds segments directly. Measured on the PyPI ``milvus`` 2.3.5 standalone server with
pymilvus 3.0.2: Parquet, row-based JSON (``{"rows": [...]}``) and column-based NumPy (one
``<field>.npy`` per field) all import; we write **Parquet** (one file per shard, the same
format the shards already use). Paths are what Milvus's chunk manager sees:

- ``common.storageType: local`` (standalone): an absolute path on the server's file system
  (a relative one is resolved against the server's working directory and fails);
- ``minio`` / S3: the object key inside Milvus's bucket (``minio.bucketName``).

Bulk import does **not** deduplicate primary keys (unlike upsert), so it only ever writes into
a fresh collection; a rerun after a crash drops the unverified, unserved collection and starts
again (see :func:`import_shards`). Indexing, verification and the alias swap are the insert
path's own :func:`vsearch.indexing.backfill.finalize_and_swap`.

Milvus Lite has no bulk import: asking for it there is a :class:`~vsearch.config.ConfigError`.

Why the import RPC goes through the client's gRPC handler (``MilvusClient._get_connection()``,
one call site) and not a public pymilvus API (measured with pymilvus 3.0.2, Milvus 2.3.5):

- ``pymilvus.bulk_writer`` does not import under our pins (its ``[bulk_writer]`` extra: minio,
  azure-storage-blob, ml_dtypes are not installed), and its ``bulk_import`` posts to the REST
  v2 jobs API (``/v2/vectordb/jobs/import/create``), which Milvus 2.3.5 does not serve (its
  REST is v1 ``/vector/...`` only). It is the way on a Milvus >= 2.4 server with the extra.
- ``MilvusClient`` has no bulk-import method; the ORM ``utility.do_bulk_insert`` is the public
  form of the same RPC but is deprecated (a FutureWarning on every call: removed in 3.1) and
  needs a second connection registered under an alias.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vsearch.config import ConfigError
from vsearch.schema import DataError

IMPORT_FIELDS = ("product_id", "embedding", "category")  # the collection's fields (store.create_collection)
_ROW_GROUP_BYTES = 32 * 1024 * 1024  # bounds the server-side Parquet reader's memory (pymilvus BulkWriter's value)


class BulkImportTimeout(RuntimeError):
    """Import tasks still running when ``timeout_s`` ran out (Milvus may still finish them)."""


@dataclass
class ImportTask:
    """One submitted bulk-import task and where it ended."""

    task_id: int
    files: list[str]
    state: str = "Pending"
    rows: int = 0
    reason: str = ""


def _is_lite_uri(uri: str) -> bool:
    return "://" not in uri


def _lite_error(uri: str) -> ConfigError:
    return ConfigError(
        f"bulk_import needs a Milvus server (got Milvus Lite '{uri}', which has no bulk import): "
        "give --milvus-uri http://host:port or set backfill.method=insert"
    )


def _connection(client_or_uri):
    """(grpc handler, owned client or None) for a MilvusClient, a vsearch Store or a server URI."""
    from pymilvus import MilvusClient

    owned = None
    client = client_or_uri
    if isinstance(client_or_uri, str | os.PathLike):
        uri = str(client_or_uri)
        if _is_lite_uri(uri):
            raise _lite_error(uri)
        client = owned = MilvusClient(uri=uri)
    elif hasattr(client_or_uri, "client") and hasattr(client_or_uri, "uri"):  # a vsearch Store
        if _is_lite_uri(client_or_uri.uri):
            raise _lite_error(client_or_uri.uri)
        client = client_or_uri.client
    if not hasattr(client, "_get_connection"):
        raise TypeError(f"bulk_import needs a MilvusClient, a vsearch Store or a URI, not {type(client_or_uri).__name__}")
    # A Lite client (milvus_lite serves gRPC too) reaches the RPC and gets UNIMPLEMENTED: see bulk_import.
    return client._get_connection(), owned


def bulk_import(
    client_or_uri,
    collection: str,
    files: Sequence[str | Sequence[str]],
    *,
    timeout_s: float = 600.0,
    poll_s: float = 1.0,
    progress=lambda _: None,
) -> dict[str, int]:
    """Submit one bulk-import task per entry of ``files`` and wait for all of them.

    Args:
        client_or_uri: a ``MilvusClient``, a :class:`vsearch.indexing.store.Store` or
            ``http://host:port`` (a Milvus server; Lite has no bulk import).
        files: paths as the server's storage sees them (see the module docstring); an entry is
            one Parquet/JSON file, or the list of ``<field>.npy`` files of one column-based set.
        timeout_s: seconds to wait for every task to end; poll_s: seconds between state polls.

    Returns:
        {file (the set's files joined by ','): rows imported}, in submission order.

    Raises:
        ConfigError: Milvus Lite.
        DataError: a task failed; names the file and Milvus's failure reason (all failures are
            collected first, every other task is waited for, so nothing is left running).
        BulkImportTimeout: tasks still running after ``timeout_s``.
    """
    from pymilvus.client.types import BulkInsertState

    conn, owned = _connection(client_or_uri)
    try:
        tasks: list[ImportTask] = []
        for entry in files:
            group = [str(entry)] if isinstance(entry, str | os.PathLike) else [str(f) for f in entry]
            if not group:
                raise ValueError("bulk_import: an empty file set")
            try:
                task_id = conn.do_bulk_insert(collection, "", group, timeout=timeout_s)
            except Exception as err:
                if "UNIMPLEMENTED" in str(err) or "not implemented" in str(err).lower():  # Milvus Lite's answer
                    raise _lite_error(getattr(client_or_uri, "uri", "this client")) from err
                raise
            tasks.append(ImportTask(int(task_id), group))
            progress(f"bulk import task {task_id}: {','.join(group)}")
        final = {BulkInsertState.ImportCompleted, BulkInsertState.ImportFailed, BulkInsertState.ImportFailedAndCleaned}
        deadline = time.monotonic() + timeout_s
        pending = list(tasks)
        while pending:
            for task in list(pending):
                st = conn.get_bulk_insert_state(task.task_id, timeout=timeout_s)
                task.state, task.rows = st.state_name, int(st.row_count)
                if st.state in final:
                    task.reason = st.failed_reason or ""
                    pending.remove(task)
                    progress(f"bulk import task {task.task_id}: {task.state}, {task.rows} rows")
            if pending and time.monotonic() > deadline:
                raise BulkImportTimeout(
                    f"bulk import into '{collection}': {len(pending)} task(s) not finished after {timeout_s:.0f} s: "
                    + "; ".join(f"{t.task_id} {t.state} ({','.join(t.files)})" for t in pending)
                )
            if pending:
                time.sleep(poll_s)
        failed = [t for t in tasks if t.state != "Completed"]
        if failed:
            first = failed[0]
            others = f"; {len(failed) - 1} more failed task(s): " + "; ".join(f"{','.join(t.files)}: {t.reason}" for t in failed[1:]) if len(failed) > 1 else ""
            raise DataError(",".join(first.files), f"Milvus bulk import into '{collection}' failed", detail=f"{first.reason}{others}")
        return {",".join(t.files): t.rows for t in tasks}
    finally:
        if owned is not None:
            owned.close()


# ------------------------------------------------------------------------------ writer
def _arrow_table(product_ids, embeddings: np.ndarray, categories):
    import pyarrow as pa

    dim = embeddings.shape[1]
    flat = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1), type=pa.float32())
    vectors = pa.ListArray.from_arrays(pa.array(np.arange(0, (len(embeddings) + 1) * dim, dim, dtype=np.int32)), flat)
    return pa.table({
        "product_id": pa.array(list(map(str, product_ids)), type=pa.string()),
        "embedding": vectors,
        "category": pa.array(list(map(str, categories)), type=pa.string()),
    })


def _check(source: str, product_ids, embeddings: np.ndarray, categories, dim: int | None) -> None:
    if embeddings.ndim != 2:
        raise DataError(source, "embeddings must be a 2-D (rows, dim) array", detail=f"shape {embeddings.shape}")
    if dim is not None and embeddings.shape[1] != dim:
        raise DataError(source, "embedding dimension differs from the collection's", detail=f"{embeddings.shape[1]} vs {dim}")
    if not (len(product_ids) == len(embeddings) == len(categories)):
        raise DataError(source, "product_id, embedding and category lengths differ",
                        detail=f"{len(product_ids)}, {len(embeddings)}, {len(categories)}")
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise DataError(source, "embedding is NaN/inf (refusing to import it)", j, f"product_id {product_ids[j]!r}")


def _read_shard(path: str):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = [c for c in IMPORT_FIELDS if c not in table.column_names]
    if missing:
        raise DataError(path, "shard file lacks columns", detail=str(missing))
    ids = table.column("product_id").to_pylist()
    cats = table.column("category").to_pylist()
    emb = table.column("embedding").combine_chunks()
    if len(emb) and emb.null_count:
        raise DataError(path, "embedding is null", int(np.flatnonzero(emb.is_null().to_numpy(zero_copy_only=False))[0]))
    lengths = np.diff(emb.offsets.to_numpy()) if len(emb) else np.zeros(0, np.int64)
    if len(lengths) and (lengths != lengths[0]).any():
        j = int(np.flatnonzero(lengths != lengths[0])[0])
        raise DataError(path, "embeddings have different lengths", j, f"{lengths[j]} vs {lengths[0]}")
    dim = int(lengths[0]) if len(lengths) else 0
    values = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return ids, values.reshape(len(ids), dim) if len(ids) else np.zeros((0, dim), np.float32), cats


def write_import_files(
    sources: Sequence[str | os.PathLike | tuple],
    out_dir: str | os.PathLike,
    *,
    dim: int | None = None,
    prefix: str = "shard",
) -> list[str]:
    """Convert shard files (or arrays) into Parquet files Milvus 2.3+ bulk import accepts.

    Args:
        sources: shard Parquet files (``product_id``, ``category``, ``embedding``: what
            ``embed_shard`` writes) or ``(product_ids, embeddings (N, dim) float32, categories)``
            tuples.
        out_dir: a folder Milvus's storage can read (the server's local storage for
            ``storageType: local``) or an fsspec URL ``s3://<milvus bucket>/<prefix>``.
        dim: the collection's vector dimension (checked when given).

    Returns:
        One path per source, as Milvus sees it: the absolute path for a local folder, the
        object key inside the bucket for ``s3://``/``gs://``/... URLs.

    Raises:
        DataError: missing columns, ragged or NaN/inf embeddings, wrong dimension (file, row named).

    Each file is written under a temporary name and renamed into place, so an import never
    reads a half-written file.
    """
    import fsspec
    import pyarrow.parquet as pq

    out = str(out_dir)
    remote = "://" in out and not out.startswith("file://")
    if not remote:
        out = str(Path(out.removeprefix("file://")).resolve())
    fs, root = fsspec.core.url_to_fs(out)
    fs.makedirs(root, exist_ok=True)
    written: list[str] = []
    for n, source in enumerate(sources):
        if isinstance(source, tuple):
            ids, emb, cats = source
            where = f"<arrays #{n}>"
            emb = np.asarray(emb, dtype=np.float32)
        else:
            where = str(source)
            ids, emb, cats = _read_shard(where)
        _check(where, list(ids), emb, list(cats), dim)
        table = _arrow_table(ids, emb, cats)
        row_bytes = max(1, table.nbytes // max(1, table.num_rows))
        row_group = int(min(1_000_000, max(1000, _ROW_GROUP_BYTES // row_bytes)))
        name = f"{prefix}-{n:05d}.parquet"
        final, tmp = f"{root}/{name}", f"{root}/.{name}.tmp-{os.getpid()}"
        with fs.open(tmp, "wb") as fh:
            pq.write_table(table, fh, row_group_size=row_group)
        fs.mv(tmp, final)
        written.append(final if not remote else final.split("/", 1)[1] if "/" in final else final)
    return written


def import_dir_for(collection: str, import_dir: str) -> str:
    """The per-collection folder under ``backfill.import_dir`` (kept apart per collection)."""
    if not import_dir:
        raise ConfigError("backfill.method=bulk_import needs backfill.import_dir: a folder or s3:// prefix Milvus's storage reads")
    return f"{import_dir.rstrip('/')}/{collection}"


def check_bulk_supported(store) -> None:
    """Raise ConfigError unless ``store`` is a Milvus server (Lite has no bulk import)."""
    if _is_lite_uri(store.uri):
        raise _lite_error(store.uri)


def import_shards(store, collection: str, shard_files, dim: int, cfg, report, progress=lambda _: None) -> None:
    """The bulk-import write step of :func:`vsearch.indexing.shards.index_shards`.

    ``collection`` was just opened by ``open_collection``. Bulk import cannot overwrite rows, so:
    an existing collection already VERIFIED with exactly the catalog's row count is kept as is
    (same content-derived model version = same vectors; it is re-verified by the caller); any
    other existing one (rows from a crashed or failed run, never served: the caller checked)
    is dropped and created again. Then every shard becomes one Parquet file in
    ``backfill.import_dir/<collection>/`` and one import task.

    Raises:
        ConfigError: Milvus Lite, or no ``backfill.import_dir``.
        DataError: a failed import task (file + Milvus's reason); the collection is marked FAILED.
    """
    from vsearch.indexing.store import FAILED, VERIFIED, WRITING

    if _is_lite_uri(store.uri):
        raise _lite_error(store.uri)
    target = import_dir_for(collection, cfg.backfill.import_dir)
    record = store.collection_record(collection) or {}
    store.client.flush(collection)
    rows_now = int(store.client.get_collection_stats(collection)["row_count"])  # no load needed (count(*) needs one)
    if rows_now:
        if record.get("status") == VERIFIED and rows_now == report.catalog_rows:
            progress(f"collection {collection} is verified with {rows_now} rows: re-verifying, not importing")
            return
        progress(f"collection {collection} holds {rows_now} rows from an unfinished run: dropping and re-creating it")
        # Recorded writing before the drop: a kill in between never leaves an empty collection "verified".
        store.set_collection_status(collection, status=WRITING, recreated_at=time.time())
        store.client.drop_collection(collection)
        store.create_collection(collection, dim)
    t0 = time.perf_counter()
    files = write_import_files(list(shard_files), target, dim=dim)
    progress(f"wrote {len(files)} import file(s) to {target} in {time.perf_counter() - t0:.2f} s")
    try:
        rows = bulk_import(store, collection, files, timeout_s=cfg.milvus.timeout_s, poll_s=cfg.backfill.import_poll_s, progress=progress)
    except (DataError, BulkImportTimeout) as err:
        store.set_collection_status(collection, status=FAILED, reasons=[f"bulk import: {err}"])
        raise
    report.written = int(sum(rows.values()))
    report.write_s = time.perf_counter() - t0
    _remove_import_files(target)  # Milvus copied them into segments; failed runs keep theirs for inspection
    progress(f"bulk-imported {report.written} rows from {len(files)} file(s) in {report.write_s:.2f} s")


def _remove_import_files(target: str) -> None:
    import fsspec

    fs, root = fsspec.core.url_to_fs(target if "://" in target else str(Path(target).resolve()))
    if fs.exists(root):
        fs.rm(root, recursive=True)
