"""Backfill: embed the whole catalog into a new versioned collection, verify it, move the alias.

Steps (each safe to interrupt; a rerun of the same command resumes):

1. **plan** — collection ``<prefix>_<model version>``; created if missing, else its dimension
   must match the model's (a clear error otherwise); its registry record says ``writing``.
2. **write** — ids already stored are skipped (and rows of products no longer in the catalog
   deleted). A collection recorded ``verified`` is recorded ``writing`` again before its first
   row changes, so neither ``index rollback`` nor ``index status`` can present a half-rewritten
   collection as verified (a served one is never rewritten: use ``--tag``). DataLoader workers
   decode images while the main thread encodes; a background thread upserts by ``product_id``
   from a bounded queue, so encoding never waits on Milvus (and memory stays bounded when
   Milvus is slower). NaN/inf embeddings stop the run with the catalog row named. The workers
   die with the process (``PR_SET_PDEATHSIG``) and never hold the Milvus Lite LOCK, so a rerun
   right after a kill can open the database.
3. **finalize** — flush, build the index (HNSW, else the configured fallbacks), load.
4. **verify** — at Strong consistency: dimension, row count == catalog, every id present,
   finite vectors, sampled recall@k of the index vs exact numpy search >= threshold.
5. **promote** — only a verified collection is recorded ``verified`` and only then does the
   alias move to it. A failed verification records ``failed``, leaves the alias alone and
   raises :class:`VerificationError` with the reasons.

Every step boundary is a :func:`vsearch.faults.fault_point` (test-only): ``open``, ``delete``,
``encode`` (after each batch is queued; decoding workers alive), ``write`` (after each stored
batch), ``written``, ``finalize``, ``index``, ``verify``, ``verified``, ``alias``;
``tests/integration/test_backfill_faults.py`` kills the process at each.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from vsearch import model_folder, schema
from vsearch.faults import fault_point
from vsearch.indexing.config import IndexConfig, load_index_config
from vsearch.indexing.store import (
    CATEGORY,
    FAILED,
    PRIMARY,
    VECTOR,
    VERIFIED,
    WRITING,
    IndexError_,
    Store,
    close_inherited_lite_locks,
    collection_name,
    connect,
    hit_id,
)
from vsearch.indexing.verify import VerifyResult, decide, exact_topk, recall_at_k
from vsearch.memory import keep_freed_memory
from vsearch.schema import DataError

Progress = Callable[[str], None]


class VerificationError(RuntimeError):
    """The collection failed verification; the alias was not moved."""

    def __init__(self, collection: str, result: VerifyResult):
        self.collection, self.result = collection, result
        super().__init__(f"collection '{collection}' failed verification: " + "; ".join(result.reasons))


@dataclass
class BackfillReport:
    collection: str
    model_version: str
    alias: str | None
    catalog_rows: int
    skipped: int = 0
    written: int = 0
    deleted_stale: int = 0
    write_s: float = 0.0
    encode_s: float = 0.0
    insert_wait_s: float = 0.0
    finalize_s: float = 0.0
    verify_s: float = 0.0
    index_type: str = ""
    verify: dict = field(default_factory=dict)
    alias_moved: bool = False
    previous_collection: str | None = None

    @property
    def write_rows_per_s(self) -> float:
        return self.written / self.write_s if self.write_s > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        """What a pipeline step logs: catalog rows, rows written, recall@k of the index against
        exact search (higher is better) and the seconds of each phase."""
        scores = {"rows": float(self.catalog_rows), "written": float(self.written),
                  "recall_at_k": float(self.verify.get("recall") or 0.0)}
        scores.update({phase: round(float(getattr(self, phase)), 3) for phase in ("write_s", "finalize_s", "verify_s")})
        return scores


RECORD_FILE = "backfill.json"
LITE_FILE = "milvus.db"


def milvus_location(milvus_uri: str, index_dir: str, index_uri: str) -> tuple[str, str]:
    """(where to connect, what to record) for an index step's Milvus.

    An endpoint is both. "" is a Milvus Lite database inside the step's index artifact: this
    pod connects to its path, and the record names it inside the artifact's URI, where it
    outlives the pod.
    """
    if milvus_uri:
        return milvus_uri, milvus_uri
    return os.path.join(index_dir, LITE_FILE), f"{index_uri.rstrip('/')}/{LITE_FILE}"


def write_record(report: BackfillReport, index_dir: str, milvus_uri: str, alias: str, **extra) -> dict:
    """Write ``<index_dir>/backfill.json`` (the report, ``milvus_uri`` as recorded and ``extra``)
    and return the index artifact's metadata: collection, alias, model version, Milvus URI,
    index type and the collection the alias pointed to before."""
    record = {**asdict(report), "milvus_uri": milvus_uri, **extra}
    with open(os.path.join(index_dir, RECORD_FILE), "w") as fh:
        json.dump(record, fh, indent=2)
    return {"collection": report.collection, "alias": alias, "model_version": report.model_version,
            "milvus_uri": milvus_uri, "index_type": report.index_type, "previous_collection": report.previous_collection}


def run_index_step(milvus_uri: str, index_dir: str, index_uri: str, overrides: list[str], alias: str,
                   write: Callable[..., BackfillReport], **extra) -> tuple[BackfillReport, dict]:
    """A pipeline step's indexing (backfill_embeddings, index_embeddings): connect where the step
    should (`milvus_location`), with the index config and ``overrides``, run
    ``write(store, cfg)`` (the backfill), write backfill.json (`write_record`, plus ``extra``).

    Returns:
        The report and the index artifact's metadata.
    """
    os.makedirs(index_dir, exist_ok=True)
    uri, recorded_uri = milvus_location(milvus_uri, index_dir, index_uri)
    cfg = load_index_config(None, list(overrides))
    with connect(uri, cfg) as store:
        report = write(store, cfg)
    return report, write_record(report, index_dir, recorded_uri, alias, **extra)


# ---------------------------------------------------------------------------------- data
class _CatalogImages:
    """Map-style dataset of (catalog row, uint8 image (3, S, S)) for the DataLoader workers.

    A bad image is returned as an error tuple, not raised, so the main process raises the
    DataError itself with file, row and rule intact (worker exceptions are re-wrapped).
    """

    def __init__(self, data_dir: str, uris: list[str], rows: list[int], size: int):
        self.data_dir, self.uris, self.rows, self.size = data_dir, uris, rows, size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        from vsearch.data.dataset import decode_image

        try:
            return self.rows[i], decode_image(self.data_dir, self.uris[i], self.size, manifest=str(Path(self.data_dir) / schema.CATALOG_FILE), row=self.rows[i]), None
        except DataError as err:
            return self.rows[i], None, (err.path, err.rule, err.row, err.detail)


def _collate(items):
    import torch

    for _, _, error in items:
        if error is not None:
            raise DataError(*error)
    return [r for r, _, _ in items], torch.stack([img for _, img, _ in items])


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this worker when its parent dies (Linux; elsewhere a no-op).

    torch's own watchdog notices a dead parent only every 5 s; an orphaned worker meanwhile
    holds memory, a CPU and (before :func:`close_inherited_lite_locks`) the Milvus Lite LOCK.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def _worker_init(parent_pid: int, _: int) -> None:
    import torch

    _die_with_parent(parent_pid)
    close_inherited_lite_locks()
    torch.set_num_threads(1)  # decoding workers must not compete with the encoder's threads


def iter_image_batches(data_dir: str, uris: list[str], rows: list[int], size: int, batch_size: int, num_workers: int):
    """Yield (catalog rows, (B, 3, S, S) uint8) batches, decoded by ``num_workers`` processes.

    Close the generator (``contextlib.closing``) when stopping early: that stops the workers
    at once instead of at garbage collection.
    """
    from torch.utils.data import DataLoader

    dataset = _CatalogImages(str(data_dir), uris, rows, size)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        worker_init_fn=functools.partial(_worker_init, os.getpid()) if num_workers else None,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )
    batches = iter(loader)
    try:
        yield from batches
    finally:
        # An exception's traceback keeps the iterator (and its workers) alive until it is
        # freed; torch's shutdown is private, hence getattr (absent with num_workers=0).
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


class _Writer(threading.Thread):
    """Upserts encoded batches from a bounded queue; the first error stops it and is re-raised."""

    _STOP = object()

    def __init__(self, store: Store, collection: str, queue_size: int, progress: Progress, total: int, done: int):
        super().__init__(name="milvus-writer", daemon=True)
        self.store, self.collection = store, collection
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.error: BaseException | None = None
        self.written = 0
        self.progress, self.total, self.done = progress, total, done

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is self._STOP:
                return
            if self.error is not None:
                continue  # drain so the producer never blocks after a failure
            ids, categories, vectors = item
            try:
                rows = [{PRIMARY: i, VECTOR: v, CATEGORY: c} for i, v, c in zip(ids, vectors.tolist(), categories)]
                self.store.client.upsert(self.collection, rows)
                self.written += len(ids)
                self.progress(f"stored {self.done + self.written}/{self.total}")
                fault_point("write")
            except BaseException as err:  # noqa: BLE001 - re-raised in the producer
                self.error = err

    def put(self, item) -> float:
        """Enqueue (blocks while the queue is full); returns seconds spent waiting."""
        start = time.perf_counter()
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(item, timeout=0.2)
                return time.perf_counter() - start
            except queue.Full:
                continue

    def finish(self) -> None:
        self.queue.put(self._STOP)
        self.join()
        if self.error is not None:
            raise self.error


def check_finite(vectors: np.ndarray, rows: list[int], ids: list[str], catalog_path: str) -> None:
    """Refuse NaN/inf embeddings at encode time, naming the catalog row."""
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise DataError(catalog_path, "embedding is NaN/inf (refusing to index it)", rows[j], f"product_id {ids[j]!r}")


# ---------------------------------------------------------------------------------- steps
def mark_writing(store: Store, collection: str) -> None:
    """Record ``collection`` as ``writing`` (unless it already is): call before its first row changes.

    A collection recorded ``verified`` whose rows then change would be presented as verified by
    ``index status`` and be a target of ``index rollback`` with whatever rows a killed rewrite
    left in it; only :func:`finalize_and_swap` records it verified again.
    """
    record = store.collection_record(collection) or {}
    if record.get("status") != WRITING:
        store.set_collection_status(collection, status=WRITING, rewrite_started_at=time.time())


def open_collection(store: Store, model_dir: str, dim: int, cfg: IndexConfig, tag: str = "",
                    model_uri: str | None = None) -> tuple[str, str, bool]:
    """(collection, model version, created?) for ``model_dir``; checks an existing one's dim.
    The collection's record names ``model_uri`` (the model's durable URI) when given."""
    from vsearch.artifacts import durable_uri, model_version

    version = model_version(model_dir)
    name = collection_name(cfg.milvus.collection_prefix, f"{version}_{tag}" if tag else version)
    created = False
    if not store.client.has_collection(name):
        store.create_collection(name, dim)
        created = True
    record = store.collection_record(name)
    if record is None or record.get("status") != VERIFIED:
        store.set_collection_status(
            name,
            status=WRITING,
            model_version=version,
            model_dir=durable_uri(model_uri or model_dir),
            dim=int(dim),
            created_at=(record or {}).get("created_at", time.time()),
        )
    return name, version, created


def write_catalog(
    store: Store,
    collection: str,
    model,
    data_dir: str,
    catalog,
    cfg: IndexConfig,
    report: BackfillReport,
    progress: Progress,
    *,
    fresh: bool,
) -> None:
    """Embed and upsert every catalog product not yet stored in ``collection``."""
    import torch

    from vsearch.data.dataset import Collator

    ids = catalog["product_id"].tolist()
    catalog_path = str(Path(data_dir) / schema.CATALOG_FILE)
    if fresh:
        stored: set[str] = set()
    else:
        # A collection from an interrupted run: flush + index + load so it can be queried.
        store.build_index(collection, cfg.index, cfg.milvus.timeout_s)
        store.load(collection, cfg.milvus.timeout_s)
        stored = store.existing_ids(collection, ids)
        # Rows of products no longer in the catalog: list every id only when the count says so.
        stale = sorted(store.existing_ids(collection) - set(ids)) if store.count(collection) > len(stored) else []
        serving = sorted(a for a, c in store.all_alias_targets().items() if c == collection)
        if serving and (stale or len(stored) < len(ids)):
            # Never rewrite a collection that is being served: that would serve a half-written index.
            raise IndexError_(
                f"collection '{collection}' is served by alias(es) {serving} and the catalog changed since it was "
                f"verified ({len(ids) - len(stored)} new, {len(stale)} removed products); rerun with --tag NAME "
                "to build a new collection"
            )
        if stale or len(stored) < len(ids):
            mark_writing(store, collection)
        for start in range(0, len(stale), 1000):
            store.client.delete(collection, filter=f"{PRIMARY} in {json.dumps(stale[start : start + 1000])}")
        report.deleted_stale = len(stale)
        if stale:
            fault_point("delete")
    todo = [i for i, pid in enumerate(ids) if pid not in stored]
    report.skipped = len(ids) - len(todo)
    progress(f"plan: {len(ids)} catalog products, {report.skipped} already stored, {len(todo)} to embed")
    if not todo:
        return
    bf = cfg.backfill
    uris = catalog["image_uri"].tolist()
    categories = catalog["category"].tolist()
    collator = Collator([], mean=model.cfg.image_mean, std=model.cfg.image_std)
    device = torch.device(bf.device)
    keep_freed_memory(device)  # a batch step: 1.5x on the encoder (vsearch.memory)
    writer = _Writer(store, collection, bf.queue_size, progress, total=len(ids), done=report.skipped)
    writer.start()
    start = time.perf_counter()
    try:
        with torch.inference_mode(), contextlib.closing(
            iter_image_batches(data_dir, [uris[i] for i in todo], todo, model.cfg.image_size, bf.batch_size, bf.num_workers)
        ) as batches:
            for rows, images in batches:
                t0 = time.perf_counter()
                vectors = model.encode_image(collator.normalize(images).to(device)).float().cpu().numpy()
                report.encode_s += time.perf_counter() - t0
                batch_ids = [ids[r] for r in rows]
                check_finite(vectors, rows, batch_ids, catalog_path)
                report.insert_wait_s += writer.put((batch_ids, [categories[r] for r in rows], vectors))
                fault_point("encode")
    except BaseException:
        writer.error = writer.error or RuntimeError("producer stopped")
        writer.queue.put(_Writer._STOP)
        writer.join(timeout=30)
        raise
    writer.finish()
    report.written = writer.written
    report.write_s = time.perf_counter() - start


def verify_collection(store: Store, collection: str, catalog_ids: list[str], expected_dim: int, cfg: IndexConfig) -> VerifyResult:
    """Measure everything :func:`vsearch.indexing.verify.decide` needs, at Strong consistency."""
    v = cfg.verify
    dim = store.collection_dim(collection)
    rows = store.count(collection)
    stored = store.fetch_vectors(collection, catalog_ids)
    missing = len(set(catalog_ids) - set(stored))
    recall, non_finite, sample_size = None, 0, 0
    if stored and dim == expected_dim:
        order = [i for i in catalog_ids if i in stored]
        matrix = np.asarray([stored[i] for i in order], dtype=np.float32)
        finite = np.isfinite(matrix).all(axis=1)
        non_finite = int((~finite).sum())
        if non_finite == 0:
            rng = np.random.default_rng(v.seed)
            sample_size = min(v.sample_size, len(order))
            sample = rng.choice(len(order), size=sample_size, replace=False)
            queries = matrix[sample]
            k = min(v.k, len(order))
            _, exact_scores = exact_topk(queries, matrix, k, cfg.index.metric)
            hits = store.search(collection, queries, k, cfg.search, cfg.index.metric, consistency="Strong")
            row_of = {pid: j for j, pid in enumerate(order)}
            found_scores = []
            for q, hit_list in enumerate(hits):
                rows_found = list(dict.fromkeys(row_of[hit_id(h)] for h in hit_list))
                _, sims = exact_topk(queries[q : q + 1], matrix[rows_found], len(rows_found), cfg.index.metric) if rows_found else (None, np.zeros((1, 0)))
                found_scores.append(sims[0])
            recall = recall_at_k(found_scores, exact_scores[:, -1], k)
    # What was measured: the rule judges it, the result records it.
    measured = dict(rows=rows, expected_rows=len(catalog_ids), dim=dim, expected_dim=expected_dim, missing=missing,
                    non_finite=non_finite, recall=recall, min_recall=v.min_recall)
    reasons = decide(**measured)
    return VerifyResult(ok=not reasons, reasons=reasons, **measured, k=v.k, sample_size=sample_size)


def check_collection_dim(store, collection: str, dim: int, expected_rows: int) -> None:
    """Refuse (and mark failed) a collection whose vectors are not ``dim``-dimensional: another model's."""
    existing_dim = store.collection_dim(collection)
    if existing_dim != dim:
        result = VerifyResult(False, [f"wrong dimension: collection has {existing_dim}, model embeds {dim}"], 0, expected_rows,
                              existing_dim, dim)
        store.set_collection_status(collection, status=FAILED, reasons=result.reasons)
        raise VerificationError(collection, result)


def backfill(
    model_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    store: Store,
    alias: str | None,
    cfg: IndexConfig,
    *,
    write: bool = True,
    tag: str = "",
    progress: Progress = lambda _: None,
    model_uri: str | None = None,
) -> BackfillReport:
    """Embed the catalog of ``data_dir`` with ``model_dir`` into its versioned collection,
    verify it and (if ``alias``) point ``alias`` at it. See the module docstring.

    Args:
        write: False = verify and promote what is stored, embed nothing (``--verify-only``).
        tag: suffix of the collection name (a second collection for the same model, e.g. after
            the catalog changed while the first one is served).
        model_uri: the model's durable URI, recorded with the collection, when ``model_dir`` is
            where one pod mounted it (a KFP artifact's ``path``).

    Raises:
        DataError: bad catalog, bad image, NaN embedding (file, row, rule named).
        VerificationError: the collection failed verification; the alias did not move.
    """
    import torch

    from vsearch.models.multitower import load_model

    model_dir, data_dir = str(model_dir), str(data_dir)
    if not (Path(model_dir) / model_folder.CONFIG_FILE).is_file():
        raise DataError(model_dir, f"not a vsearch model folder (missing {model_folder.CONFIG_FILE})")
    catalog = schema.read_manifest(data_dir, schema.CATALOG_FILE)
    model, _ = load_model(model_dir, device=cfg.backfill.device)
    model.eval()
    dim = int(model.cfg.embed_dim)
    collection, version, created = open_collection(store, model_dir, dim, cfg, tag, model_uri)
    fault_point("open")
    report = BackfillReport(collection, version, alias, len(catalog))
    check_collection_dim(store, collection, dim, len(catalog))
    progress(f"collection {collection} ({'new' if created else 'existing'}), model {version}, dim {dim}")
    if write:
        # Scoped, never global: a backfill called in-process must not switch autograd off for
        # the caller (a global set_grad_enabled(False) broke training later in the same process).
        with torch.no_grad():
            write_catalog(store, collection, model, data_dir, catalog, cfg, report, progress, fresh=created)
        progress(f"written {report.written} rows in {report.write_s:.2f} s")
        fault_point("written")
    return finalize_and_swap(store, collection, catalog["product_id"].tolist(), dim, cfg, report, alias, progress)


def finalize_and_swap(store, collection: str, catalog_ids: list[str], dim: int, cfg, report, alias: str | None, progress):
    """Index + load ``collection``, verify it, record its status, and only then move ``alias``.

    The one path by which any backfill (single step or sharded) reaches serving: a failed
    verification marks the collection FAILED and raises VerificationError, alias untouched.
    """
    fault_point("finalize")
    t0 = time.perf_counter()
    report.index_type = store.build_index(collection, cfg.index, cfg.milvus.timeout_s)
    store.load(collection, cfg.milvus.timeout_s)
    report.finalize_s = time.perf_counter() - t0
    progress(f"flushed, indexed ({report.index_type}), loaded")
    fault_point("index")
    t0 = time.perf_counter()
    result = verify_collection(store, collection, catalog_ids, dim, cfg)
    report.verify_s = time.perf_counter() - t0
    report.verify = result.to_dict()
    fault_point("verify")
    if not result.ok:
        store.set_collection_status(collection, status=FAILED, reasons=result.reasons, verify=result.to_dict())
        raise VerificationError(collection, result)
    store.set_collection_status(collection, status=VERIFIED, verified_at=time.time(), verify=result.to_dict(), index_type=report.index_type)
    progress(f"verified: {result.rows} rows, recall@{result.k} {result.recall:.4f}")
    fault_point("verified")
    if alias:
        report.previous_collection = store.alias_target(alias)
        if report.previous_collection != collection:
            store.move_alias(alias, collection)
            report.alias_moved = True
            progress(f"alias {alias}: {report.previous_collection} -> {collection}")
            fault_point("alias")
        else:
            if (store.alias_history(alias)[-1:] or [{}])[0].get("collection") != collection:
                # A run killed between the alias move and its history record: record it now,
                # so a later rollback leaves this collection rather than returning to it.
                store.move_alias(alias, collection)
            progress(f"alias {alias} already on {collection}")
    return report
