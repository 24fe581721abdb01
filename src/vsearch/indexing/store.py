"""Milvus access for vsearch: connection, versioned collections, the registry, aliases.

One code path for Milvus Lite (a ``.db`` folder) and any Milvus server (``http://host:port``).
The registry is a small Milvus collection (``vsearch_registry``) next to the data, so state
travels with the vectors whatever the deployment:

- ``collection:<name>`` -> {model_version, model_dir, dim, created_at, status: writing | verified | failed, ...}
- ``alias:<alias>`` -> {"history": [{"collection", "at"}, ...]}: every collection the alias was
  moved to, oldest first; ``rollback`` pops the last entry.

Nothing here reads a token from a file: the token comes from the environment variable named
in the index config.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vsearch.indexing.config import IndexConfig, IndexParams, MilvusSettings

PRIMARY = "product_id"
VECTOR = "embedding"
CATEGORY = "category"
ID_MAX_LENGTH = 512
CATEGORY_MAX_LENGTH = 256
STRONG = "Strong"
_QUERY_CHUNK = 1000  # ids per `product_id in [...]` filter

VERIFIED, WRITING, FAILED = "verified", "writing", "failed"
LITE_LOCK_WAIT_S = 30.0  # how long connect() waits for another process to release a Milvus Lite database


class IndexError_(RuntimeError):
    """An index operation that cannot proceed (alias missing, nothing to roll back to ...)."""


class EmbeddingSpaceMismatch(IndexError_):
    """A model would query a collection another model built (or one of another dimension)."""


# The one naming rule for the aliases of a release (vsearch.release): the live alias is moved
# only by an explicit promotion or rollback; a candidate is indexed under <live>_candidate; on a
# first deployment (no champion yet) the control arm is the baseline under <live>_baseline.
CANDIDATE_SUFFIX = "_candidate"
BASELINE_SUFFIX = "_baseline"


def candidate_alias(live_alias: str) -> str:
    return live_alias + CANDIDATE_SUFFIX


def baseline_alias(live_alias: str) -> str:
    return live_alias + BASELINE_SUFFIX


def hit_id(hit) -> str:
    """Primary key of a search hit (a server reports it as ``id``, Lite under the field name)."""
    pk = getattr(hit, "id", None)
    return pk if pk is not None else hit[PRIMARY]


def is_lite(uri: str) -> bool:
    return "://" not in uri


def collection_name(prefix: str, version: str) -> str:
    """Milvus-safe collection name for a model version: ``vsearch_3t_0123abcd4567``."""
    name = re.sub(r"[^0-9A-Za-z_]", "_", f"{prefix}_{version}")
    if not re.match(r"[A-Za-z_]", name):
        name = f"c_{name}"
    return name


@dataclass
class Store:
    """A connected MilvusClient plus the settings that name things."""

    client: object
    uri: str
    settings: MilvusSettings
    _registry_ready: bool = False

    def close(self) -> None:
        """Close the client; for Milvus Lite also stop the in-process server (frees the LOCK)."""
        try:
            self.client.close()
        finally:
            if is_lite(self.uri):
                # MilvusClient.close() (pymilvus 3.0) releases only the gRPC handler, and milvus_lite
                # stops its servers at process exit (atexit); the LOCK must go now. pymilvus has no
                # stop; milvus_lite exports its server manager for pymilvus (in its __all__).
                from milvus_lite import server_manager_instance

                server_manager_instance.release_server(self.uri)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ registry
    def _ensure_registry(self) -> str:
        from pymilvus import DataType, MilvusClient

        name = self.settings.registry_collection
        if self._registry_ready:
            return name
        c = self.client
        if not c.has_collection(name):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_LENGTH)
            schema.add_field("payload", DataType.VARCHAR, max_length=65535)
            # Milvus requires a vector field in every collection; this one is never searched.
            schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
            c.create_collection(name, schema=schema, consistency_level=STRONG)
            params = c.prepare_index_params()
            params.add_index(field_name="unused", index_type="FLAT", metric_type="L2")
            c.create_index(name, params)
        self.ensure_loaded(name)
        self._registry_ready = True
        return name

    def get_record(self, key: str) -> dict | None:
        name = self._ensure_registry()
        rows = self.client.query(name, filter=f"key == {json.dumps(key)}", output_fields=["payload"], consistency_level=STRONG)
        return json.loads(rows[0]["payload"]) if rows else None

    def put_record(self, key: str, payload: dict) -> None:
        name = self._ensure_registry()
        self.client.upsert(name, [{"key": key, "payload": json.dumps(payload, sort_keys=True), "unused": [0.0, 0.0]}])
        # Reads are Strong, so they see the write either way. A server has it durable once the
        # upsert returns (its write-ahead log); a flush there seals a tiny segment and costs ~3 s
        # (3 per backfill, measured on 2.3.5), which Milvus advises against. Lite keeps the flush:
        # its file is what survives a kill -9 (tests/integration/test_indexing_crash.py).
        if is_lite(self.uri):
            self.client.flush(name)

    def records(self, prefix: str) -> dict[str, dict]:
        name = self._ensure_registry()
        rows = self.client.query(
            name, filter=f"key like {json.dumps(prefix + '%')}", output_fields=["key", "payload"], consistency_level=STRONG, limit=16384
        )
        return {r["key"][len(prefix) :]: json.loads(r["payload"]) for r in rows}

    def collection_record(self, collection: str) -> dict | None:
        return self.get_record(f"collection:{collection}")

    def set_collection_status(self, collection: str, **fields) -> dict:
        record = dict(self.collection_record(collection) or {})
        record.update(fields)
        self.put_record(f"collection:{collection}", record)
        return record

    def check_embedding_space(self, name: str, model_version: str, dim: int | None) -> str:
        """The collection behind ``name`` (alias or collection), if ``model_version`` built it.

        Every query path (search CLI, service, each A/B arm, promote, rollback) calls this
        before it sends a vector: vectors of one model are meaningless in another's space.

        Raises:
            IndexError_: ``name`` resolves to nothing.
            EmbeddingSpaceMismatch: the collection was built by another model, has another
                dimension, has no recorded builder, or is not verified.
        """
        target = self.alias_target(name) or (name if self.client.has_collection(name) else None)
        if target is None:
            raise IndexError_(f"Milvus alias '{name}' does not exist")
        record = self.collection_record(target) or {}
        built_by, status = record.get("model_version"), record.get("status", "unknown")
        # dim None: not readable here (a model URI this process cannot open); the content
        # version already pins the weights, and with them the dimension.
        where = f"'{name}' -> collection '{target}'" if target != name else f"collection '{target}'"
        if built_by is None:
            raise EmbeddingSpaceMismatch(f"{where} has no recorded model version: refusing to query it with model {model_version}")
        if built_by != model_version:
            raise EmbeddingSpaceMismatch(f"{where} was built by model {built_by}, not by model {model_version}: "
                                         "its vectors are in another embedding space")
        stored_dim = self.collection_dim(target)
        if dim is not None and stored_dim != int(dim):
            raise EmbeddingSpaceMismatch(f"{where} holds {stored_dim}-dim vectors; model {model_version} embeds {dim}")
        if status != VERIFIED:
            raise EmbeddingSpaceMismatch(f"{where} is not verified (status {status}): nothing unverified is served")
        return target

    def drop_alias(self, alias: str, *, record: bool = True) -> None:
        """Remove ``alias`` (a release rolled back to 'nothing live yet'); history keeps a tombstone."""
        if self.alias_target(alias) is not None:
            self.client.drop_alias(alias)
        if record:
            history = self.alias_history(alias)
            history.append({"collection": None, "at": time.time()})
            self.put_record(f"alias:{alias}", {"history": history})

    # ------------------------------------------------------------ aliases
    def alias_target(self, alias: str) -> str | None:
        """The collection ``alias`` points to, or None when the alias does not exist."""
        if alias not in self.client.list_aliases().get("aliases", []):
            return None
        return self.client.describe_alias(alias)["collection_name"]

    def alias_history(self, alias: str) -> list[dict]:
        return list((self.get_record(f"alias:{alias}") or {}).get("history", []))

    def move_alias(self, alias: str, collection: str, *, record: bool = True) -> None:
        """Point ``alias`` at ``collection`` (create it if missing); append to the alias history."""
        if self.alias_target(alias) is None:
            self.client.create_alias(collection, alias)
        else:
            self.client.alter_alias(collection, alias)
        if record:
            history = self.alias_history(alias)
            history.append({"collection": collection, "at": time.time()})
            self.put_record(f"alias:{alias}", {"history": history})

    def rollback_alias(self, alias: str) -> tuple[str, str]:
        """Move ``alias`` back to the previous verified collection still present.

        Returns:
            (from_collection, to_collection).
        Raises:
            IndexError_: the alias does not exist or has no earlier verified collection.
        """
        current = self.alias_target(alias)
        if current is None:
            raise IndexError_(f"alias '{alias}' does not exist")
        history = self.alias_history(alias)
        # Drop the entries of the current collection from the top of the stack.
        while history and history[-1]["collection"] == current:
            history.pop()
        while history:
            candidate = history[-1]["collection"]
            record = (self.collection_record(candidate) or {}) if candidate else {}
            if candidate and candidate != current and self.client.has_collection(candidate) and record.get("status") == VERIFIED \
                    and self.rows_as_verified(candidate, record):
                self.client.alter_alias(candidate, alias)
                self.put_record(f"alias:{alias}", {"history": history})
                return current, candidate
            history.pop()  # dropped, never verified or changed since: not a rollback target
        raise IndexError_(f"alias '{alias}' has no earlier verified collection to roll back to (now on '{current}')")

    def rows_as_verified(self, collection: str, record: dict | None = None) -> bool:
        """Whether ``collection`` still holds the row count its verification measured.

        A defence in depth for records written before a rewrite recorded ``writing`` first: a
        collection recorded verified whose rows have changed since is not served.
        """
        record = self.collection_record(collection) if record is None else record
        verified_rows = ((record or {}).get("verify") or {}).get("rows")
        if verified_rows is None:
            return True  # recorded before verification kept its numbers: nothing to compare
        self.ensure_loaded(collection)
        return self.count(collection) == int(verified_rows)

    # ------------------------------------------------------------ collections
    def versioned_collections(self) -> list[str]:
        prefix = self.settings.collection_prefix + "_"
        return sorted(
            n for n in self.client.list_collections() if n.startswith(prefix) and n != self.settings.registry_collection
        )

    def all_alias_targets(self) -> dict[str, str]:
        return {a: self.client.describe_alias(a)["collection_name"] for a in self.client.list_aliases().get("aliases", [])}

    def create_collection(self, name: str, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(PRIMARY, DataType.VARCHAR, is_primary=True, max_length=ID_MAX_LENGTH)
        schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=int(dim))
        schema.add_field(CATEGORY, DataType.VARCHAR, max_length=CATEGORY_MAX_LENGTH)
        self.client.create_collection(name, schema=schema, consistency_level=STRONG)

    def collection_dim(self, name: str) -> int:
        for f in self.client.describe_collection(name)["fields"]:
            if f["name"] == VECTOR:
                return int(f["params"]["dim"])
        raise IndexError_(f"collection '{name}' has no '{VECTOR}' field")

    def count(self, name: str) -> int:
        rows = self.client.query(name, output_fields=["count(*)"], consistency_level=STRONG)
        return int(rows[0]["count(*)"])

    def existing_ids(self, name: str, ids: Iterable[str] | None = None) -> set[str]:
        """Primary keys stored in ``name`` (all of them, or those among ``ids``), at Strong."""
        c = self.client
        found: set[str] = set()
        if ids is None:
            it = c.query_iterator(name, batch_size=4096, output_fields=[PRIMARY], consistency_level=STRONG)
            try:
                while batch := it.next():
                    found.update(r[PRIMARY] for r in batch)
            finally:
                it.close()
            return found
        ids = list(ids)
        for start in range(0, len(ids), _QUERY_CHUNK):
            chunk = ids[start : start + _QUERY_CHUNK]
            rows = c.query(name, filter=f"{PRIMARY} in {json.dumps(chunk)}", output_fields=[PRIMARY], consistency_level=STRONG)
            found.update(r[PRIMARY] for r in rows)
        return found

    def fetch_vectors(self, name: str, ids: list[str]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for start in range(0, len(ids), _QUERY_CHUNK):
            chunk = ids[start : start + _QUERY_CHUNK]
            rows = self.client.query(
                name, filter=f"{PRIMARY} in {json.dumps(chunk)}", output_fields=[PRIMARY, VECTOR], consistency_level=STRONG
            )
            out.update({r[PRIMARY]: r[VECTOR] for r in rows})
        return out

    def build_index(self, name: str, params: IndexParams, timeout_s: float) -> str:
        """Flush, then build the best available index of ``params`` and wait for it; returns its type.

        Flush comes first: an index created before any flush is accepted even when the type
        is unsupported and then silently serves brute force (shared NOTES).
        """
        c = self.client
        c.flush(name)
        if VECTOR in c.list_indexes(name):
            info = c.describe_index(name, VECTOR)
            self._wait_index(name, timeout_s)
            return str(info.get("index_type"))
        errors = []
        for index_type in [params.type, *params.fallback]:
            ip = c.prepare_index_params()
            extra = params.hnsw if index_type == "HNSW" else params.ivf if index_type.startswith("IVF") else {}
            ip.add_index(field_name=VECTOR, index_type=index_type, metric_type=params.metric, params=dict(extra))
            try:
                c.create_index(name, ip)
                self._wait_index(name, timeout_s)
                return index_type
            except Exception as err:  # server refused this type: try the next one
                errors.append(f"{index_type}: {err}")
                if VECTOR in c.list_indexes(name):
                    c.drop_index(name, VECTOR)
        raise IndexError_(f"no index type could be built on '{name}': " + "; ".join(errors))

    def _wait_index(self, name: str, timeout_s: float) -> None:
        """Until the index on ``name`` is Finished over every row; IndexError_ if Failed or late.

        After ``create_index`` this returns at once: MilvusClient.create_index (pymilvus 3.0.2)
        already waits for the build, on Lite and on a server. It polls only for an index found
        already there (a resumed run). No pymilvus wait fits that: MilvusClient has none public;
        ``utility.wait_for_index_building_complete`` is ORM (FutureWarning: removed in 3.1,
        needs a connection alias), enforces its timeout only when it is an ``int``, and looks at
        the state alone, not indexed_rows against total_rows.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.client.describe_index(name, VECTOR)
            state = str(info.get("state", "Finished"))
            if state.endswith("Failed"):
                raise IndexError_(f"index build on '{name}' failed: {info.get('index_state_fail_reason', info)}")
            total, done = info.get("total_rows"), info.get("indexed_rows")
            if state.endswith("Finished") and (total is None or done is None or done >= total):
                return
            if time.monotonic() > deadline:
                raise IndexError_(f"index build on '{name}' not finished after {timeout_s:.0f} s ({info})")
            time.sleep(0.5)

    def ensure_loaded(self, name: str, timeout_s: float = 600.0) -> None:
        """Load ``name`` (a collection or alias) unless it is loaded (Lite forgets on reopen)."""
        if not str(self.client.get_load_state(name).get("state")).endswith("Loaded"):
            self.load(name, timeout_s)

    def load(self, name: str, timeout_s: float) -> None:
        self.client.load_collection(name, timeout=timeout_s)
        state = str(self.client.get_load_state(name).get("state"))
        if not state.endswith("Loaded"):
            raise IndexError_(f"collection '{name}' did not load (state {state})")

    def search(self, name: str, vectors, k: int, search_cfg, metric: str, output_fields=(), consistency: str | None = None):
        params = {"metric_type": metric, "params": {"ef": max(int(search_cfg.ef), k), "nprobe": int(search_cfg.nprobe)}}
        kwargs = {"consistency_level": consistency} if consistency else {}
        return self.client.search(
            name, data=[list(map(float, v)) for v in vectors], limit=k, search_params=params, output_fields=list(output_fields), **kwargs
        )


def connect(uri: str, cfg: IndexConfig, *, lock_wait_s: float = LITE_LOCK_WAIT_S) -> Store:
    """Open Milvus at ``uri`` (a Lite ``.db`` path or ``http(s)://host:port``).

    The token, if any, is read from the environment variable ``cfg.milvus.token_env``. A Milvus
    Lite database is one process's at a time (a ``flock`` on its LOCK file): while another
    process holds it, wait up to ``lock_wait_s`` seconds (e.g. a killed run's last moments).

    Raises:
        IndexError_: a Lite path not ending in .db, or one still locked after ``lock_wait_s``.
    """
    from pymilvus import MilvusClient

    kwargs = {}
    token = os.environ.get(cfg.milvus.token_env, "") if cfg.milvus.token_env else ""
    if is_lite(uri):
        if not uri.endswith(".db"):
            raise IndexError_(f"--milvus-uri '{uri}': a Milvus Lite path must end in .db (or give http://host:port)")
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        uri = str(Path(uri).resolve())
        return Store(_open_lite(uri, lock_wait_s), uri, cfg.milvus)
    if token:
        kwargs["token"] = token
    client = MilvusClient(uri=uri, **kwargs)
    return Store(client, uri, cfg.milvus)


_LITE_LOCK_FILE = "LOCK"  # milvus_lite.db.LOCK_FILENAME


def _lite_locked_elsewhere(uri: str) -> bool:
    """Whether another open file description holds the flock on the Lite database's LOCK."""
    import fcntl

    path = Path(uri) / _LITE_LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops our probe lock too
    return False


def _open_lite(uri: str, wait_s: float):
    """A MilvusClient on the Lite database ``uri``, waiting while another process holds it."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import ConnectionConfigException

    deadline = time.monotonic() + wait_s
    # milvus_lite logs a traceback for every refused open; one line from us says it all.
    quiet = logging.getLogger("milvus_lite.server_manager")
    unexplained = 0
    while True:
        disabled, quiet.disabled = quiet.disabled, True
        try:
            return MilvusClient(uri=uri)
        except ConnectionConfigException as err:
            if not _lite_locked_elsewhere(uri):
                unexplained += 1  # once may be the holder letting go just now; twice is something else
                if unexplained > 1:
                    raise IndexError_(f"cannot open Milvus Lite database {uri}: {err}") from err
            elif time.monotonic() >= deadline:
                raise IndexError_(f"Milvus Lite database {uri} is still locked by another process after {wait_s:.0f} s "
                                  "(another vsearch command using it?)") from err
        finally:
            quiet.disabled = disabled
        time.sleep(0.1)


def close_inherited_lite_locks() -> None:
    """In a forked child (a DataLoader worker), close its copies of the parent's Milvus Lite LOCK fds.

    A flock belongs to the open file description, which fork shares: a child that keeps the
    copy keeps the parent's database locked after the parent dies. Closing a copy releases
    nothing for the parent (never LOCK_UN here). Linux (/proc); elsewhere a no-op.
    """
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        return
    for entry in list(fd_dir.iterdir()):
        try:
            target = Path(os.readlink(entry))
        except OSError:
            continue  # the listing's own fd, already closed
        if target.name == _LITE_LOCK_FILE and target.parent.name.endswith(".db"):
            try:
                os.close(int(entry.name))
            except OSError:
                pass
