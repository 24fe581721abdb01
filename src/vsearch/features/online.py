"""Online product features: materialize into the online store, look products up by id.

The search service hydrates its results with ``lookup_products(repo_path, product_ids)``.
The online store is whatever ``feature_store.yaml`` resolves to (SQLite by default, Redis in
production via ``VSEARCH_FEAST_ONLINE_STORE``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from vsearch.features import repo as feature_repo

_STORES: dict[tuple, object] = {}
_LOCK = threading.Lock()


def _store(repo_path: str | os.PathLike):
    """The FeatureStore of a working repo, cached per (path, resolved config): loading costs seconds."""
    path = Path(repo_path).resolve()
    config_file = path / feature_repo.CONFIG_FILE
    resolved = feature_repo.resolve(config_file.read_text()) if config_file.is_file() else {}
    key = (str(path), json.dumps(resolved, sort_keys=True, default=str))
    with _LOCK:
        store = _STORES.get(key)
        if store is None:
            from feast import FeatureStore

            store = FeatureStore(repo_path=str(path), config=feature_repo.load_config(path))
            _STORES[key] = store
        return store


def clear_cache() -> None:
    """Forget cached FeatureStores (after re-materializing into a new repo, in tests)."""
    with _LOCK:
        _STORES.clear()


def materialize(data_dir: str | os.PathLike, repo_dir: str | os.PathLike, end: datetime | None = None) -> dict:
    """Prepare the working repo ``repo_dir`` from ``data_dir``, apply, and load the online store.

    Every product's latest version at ``end`` (default: now, UTC) lands in the online store.

    Returns:
        A JSON-able summary: repo, online store type, products, end time.
    """
    store = feature_repo.prepare_repo(data_dir, repo_dir)
    end = end or datetime.now(timezone.utc)
    frame = feature_repo.product_feature_frame(data_dir)
    start = frame["event_timestamp"].min().to_pydatetime() - timedelta(seconds=1)
    with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress; stdout carries our JSON
        store.materialize(start_date=start, end_date=end)
    clear_cache()
    return {
        "repo": str(Path(repo_dir).resolve()),
        "online_store": store.config.online_store.type,
        "products": int(frame["product_id"].nunique()),
        "feature_service": feature_repo.FEATURE_SERVICE,
        "end": end.isoformat(),
    }


def materialize_configured(data_dir: str | os.PathLike, end: datetime | None = None,
                           env: dict[str, str] | None = None) -> dict:
    """Load the online store that the environment names with ``data_dir``'s products (a pipeline step).

    The store and the registry come from ``$VSEARCH_FEAST_ONLINE_STORE`` and
    ``$VSEARCH_FEAST_REGISTRY`` (on a cluster: Secret ``vsearch-feast``); the working repo is a
    temporary folder. With no online store configured nothing is written and the summary says
    why (a local run has no shared store to load).

    Returns:
        ``{"materialized": bool, ...}``: the online store type, registry, products, feature
        service and end time, or the ``reason`` it was skipped. No local path, no connection string.

    Raises:
        ConfigError: an online store without a registry that outlives the step (a URL or an
            absolute path): the serving side could not read what was written.
    """
    import tempfile

    from vsearch.config import ConfigError

    env = os.environ if env is None else env
    if not env.get(feature_repo.ONLINE_STORE_ENV):
        return {"materialized": False,
                "reason": f"no online store configured (${feature_repo.ONLINE_STORE_ENV} is unset; on a cluster: Secret vsearch-feast)"}
    registry = env.get(feature_repo.REGISTRY_ENV, "")
    if "://" not in registry and not os.path.isabs(registry):
        raise ConfigError(f"${feature_repo.REGISTRY_ENV} must be a registry URL or absolute path that outlives this step, "
                          f"got {registry!r}")
    with tempfile.TemporaryDirectory(prefix="vsearch-feast-") as repo:
        summary = materialize(data_dir, repo, end)
    return {"materialized": True, "registry": registry, **{k: v for k, v in summary.items() if k != "repo"}}


def lookup_products(repo_path: str | os.PathLike, product_ids: Sequence[str]) -> dict[str, dict]:
    """Online features of products, for hydrating search results.

    Args:
        repo_path: a working repo written by ``materialize`` (``vsearch features materialize``).
        product_ids: ids to look up (duplicates are fine).

    Returns:
        ``{product_id: {"title": str, "image_uri": str, "category": str}}`` for every id found
        in the online store; ids not found are absent.
    """
    ids = list(dict.fromkeys(str(p) for p in product_ids))
    if not ids:
        return {}
    store = _store(repo_path)
    service = store.get_feature_service(feature_repo.FEATURE_SERVICE)
    rows = store.get_online_features(features=service, entity_rows=[{"product_id": p} for p in ids]).to_dict()
    out: dict[str, dict] = {}
    for i, pid in enumerate(rows["product_id"]):
        values = {f: rows[f][i] for f in feature_repo.FEATURES}
        if all(v is not None for v in values.values()):
            out[pid] = values
    return out
