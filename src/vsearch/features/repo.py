"""The working Feast repo: definitions from ``feature_repo/``, product features from a data folder.

``prepare_repo(data_dir, repo_dir)`` makes ``repo_dir`` a self-contained Feast repo: a copy
of the definitions (``feature_store.yaml`` + ``*.py``), ``data/product_features.parquet``
written from the data folder (the product history when there is one, else the catalog as
valid since ``CATALOG_EPOCH``), and an applied registry.

``feature_store.yaml`` is a plain Feast config (``feast plan`` works in ``feature_repo/`` as
shipped); ``load_config`` reads it as ``resolve`` says: ``${VAR}``s (the cluster's copy has
them) expanded by the rule of Feast's own loader, then the ``ENV_KEYS`` variables that are set
override their keys (the cluster's registry and online store).

Why not Feast's loaders themselves (feast 0.67): ``feast.repo_config.load_repo_config`` builds
the validated ``RepoConfig`` straight from the expanded text, with no place for the
``ENV_KEYS`` overrides (a Feast config has no key-from-variable override, and the plain file
must stay plain for ``feast plan``); ``feast.repo_operations.parse_repo`` imports each
definition file by its path relative to the *current directory* under a bare module name
(``products``), so it needs a chdir plus ``sys.path`` entry (what ``feast apply`` does), and
a second working repo in the same process would get the first one's cached module.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from vsearch import artifacts, schema
from vsearch.config import ConfigError
from vsearch.schema import DataError

# The keys of feature_store.yaml that these environment variables override (production:
# VSEARCH_FEAST_ONLINE_STORE='{type: redis, connection_string: "host:6379"}', a YAML flow mapping).
ENV_KEYS = {
    "VSEARCH_FEAST_PROJECT": ("project",),
    "VSEARCH_FEAST_REGISTRY": ("registry", "path"),
    "VSEARCH_FEAST_ONLINE_STORE": ("online_store",),
}
ONLINE_STORE_ENV, REGISTRY_ENV = "VSEARCH_FEAST_ONLINE_STORE", "VSEARCH_FEAST_REGISTRY"
DEFINITIONS_ENV = "VSEARCH_FEATURE_REPO"
CONFIG_FILE = "feature_store.yaml"
SOURCE_FILE = "data/product_features.parquet"  # must match products.py's FileSource path
FEATURE_SERVICE = "product_features_v1"
FEATURES = ("title", "image_uri", "category")
# Without a product history the catalog is taken as valid since this instant (before any click).
CATALOG_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # one left after expansion: not set
_EXPANDABLE = re.compile(r"\$(\w+|\{[^}]*\})", re.ASCII)  # os.path.expandvars' (posixpath) pattern


def _quiet_feast() -> None:
    os.environ.setdefault("FEAST_USAGE", "False")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def definitions_dir(start: str | os.PathLike | None = None) -> Path:
    """The Feast definitions folder: ``$VSEARCH_FEATURE_REPO`` (the images set it), else the
    ``feature_repo/`` of the project one works in: ``start`` (default: the current directory) or
    the nearest folder above it that has one, as git finds ``.git``.

    The package does not look for it next to its own files: installed, they sit in
    site-packages, far from any project.
    """
    if os.environ.get(DEFINITIONS_ENV):
        path = Path(os.environ[DEFINITIONS_ENV])
    else:
        here = Path(start or Path.cwd()).resolve()
        found = [d / "feature_repo" for d in (here, *here.parents) if (d / "feature_repo" / CONFIG_FILE).is_file()]
        path = found[0] if found else here / "feature_repo"
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"{path}: no {CONFIG_FILE} (run from the project, or set {DEFINITIONS_ENV} to its feature_repo folder)")
    return path


def resolve(text: str, env: Mapping[str, str] | None = None) -> dict:
    """``feature_store.yaml`` text as vsearch configures Feast: ``$VAR`` and ``${VAR}`` expanded
    from ``env`` (default: the process environment) by the rule of Feast's ``load_repo_config``
    (``os.path.expandvars``, which reads only the process environment), then each ``ENV_KEYS``
    variable set (non-empty) in ``env`` overrides its key.

    Raises:
        ConfigError: a ``${VAR}`` left unset (Feast would keep it as text), or an online store
            that is not a mapping.
    """
    import yaml

    env = os.environ if env is None else env
    expanded = _expand_vars(text, env)
    unset = _VAR.search(expanded)
    if unset:
        raise ConfigError(f"{CONFIG_FILE}: ${{{unset.group(1)}}} is not set")
    raw = yaml.safe_load(expanded) or {}
    for var, keys in ENV_KEYS.items():
        if not env.get(var):
            continue
        value = yaml.safe_load(env[var]) if var == ONLINE_STORE_ENV else env[var]
        if var == ONLINE_STORE_ENV and not isinstance(value, dict):
            raise ConfigError(f"${var} must be a YAML mapping such as {{type: redis, connection_string: ...}}")
        target = raw
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    return raw


def _expand_vars(text: str, env: Mapping[str, str]) -> str:
    """``text`` with each ``$VAR`` / ``${VAR}`` set in ``env`` replaced, the others kept as they
    are: ``os.path.expandvars``' rule over any mapping instead of the process environment."""
    def value(match: re.Match) -> str:
        name = match.group(1).strip("{}")
        return env[name] if name in env else match.group(0)

    return _EXPANDABLE.sub(value, text) if "$" in text else text


def load_config(repo_dir: str | os.PathLike):
    """The Feast ``RepoConfig`` of a working repo (``resolve``d, paths relative to it)."""
    _quiet_feast()
    from feast.repo_config import RepoConfig

    repo_dir = Path(repo_dir).resolve()
    path = repo_dir / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{repo_dir}: not a vsearch feature repo (no {CONFIG_FILE}); run `vsearch features materialize` first")
    raw = resolve(path.read_text())
    try:
        config = RepoConfig(**raw)
    except Exception as err:  # pydantic ValidationError: a bad online store setting
        raise ConfigError(f"{path}: {err}") from err
    config.repo_path = repo_dir
    return config


def load_definitions(repo_dir: str | os.PathLike) -> list:
    """Every Feast object (entities, sources, feature views, services) defined in the repo's .py files.

    Imported by file location under a private module name, so the current directory and
    ``sys.path`` are left alone (``feast apply`` changes both).
    """
    _quiet_feast()
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    objects: list = []
    for i, path in enumerate(sorted(Path(repo_dir).glob("*.py"))):
        name = f"_vsearch_feature_repo_{abs(hash(str(path.resolve())))}_{i}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        finally:
            sys.modules.pop(name, None)
        for value in vars(module).values():
            if isinstance(value, (Entity, DataSource, FeatureView, FeatureService)) and not any(value is o for o in objects):
                objects.append(value)
    return objects


def product_feature_frame(data_dir: str | os.PathLike) -> pd.DataFrame:
    """Product versions for the feature source: product_id, title, image_uri, category, event_timestamp.

    From ``product_history.parquet`` when the data folder has one (plus, for any catalog
    product missing from it, its catalog row valid since ``CATALOG_EPOCH``); else the catalog,
    valid since ``CATALOG_EPOCH``. Timestamps are UTC nanoseconds.
    """
    catalog = schema.read_manifest(data_dir, schema.CATALOG_FILE)
    cols = ["product_id", "title", "image_uri", "category"]
    base = catalog[cols].assign(event_timestamp=CATALOG_EPOCH)
    if (Path(data_dir) / schema.PRODUCT_HISTORY_FILE).is_file():
        history = schema.read_manifest(data_dir, schema.PRODUCT_HISTORY_FILE)
        dup = history.duplicated(["product_id", "event_timestamp"])
        if dup.any():
            row = int(dup.to_numpy().nonzero()[0][0])
            raise DataError(Path(data_dir) / schema.PRODUCT_HISTORY_FILE, "(product_id, event_timestamp) must be unique", row,
                            repr(history["product_id"].iloc[row]))
        history = history[cols + ["event_timestamp"]]
        frame = pd.concat([history, base[~base["product_id"].isin(history["product_id"])]], ignore_index=True)
    else:
        frame = base
    frame = frame.astype({c: object for c in cols})
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    return frame.sort_values(["product_id", "event_timestamp"], kind="stable").reset_index(drop=True)


def prepare_repo(data_dir: str | os.PathLike, repo_dir: str | os.PathLike, *, apply: bool = True):
    """Make ``repo_dir`` a working Feast repo for ``data_dir`` and apply the definitions.

    Returns:
        The ``FeatureStore`` of the working repo.
    """
    _quiet_feast()
    from feast import FeatureStore

    repo_dir = Path(repo_dir)
    (repo_dir / "data").mkdir(parents=True, exist_ok=True)
    src = definitions_dir()
    for path in [src / CONFIG_FILE, *sorted(src.glob("*.py"))]:
        shutil.copyfile(path, repo_dir / path.name)
    frame = product_feature_frame(data_dir)
    with artifacts.staged_file(repo_dir / SOURCE_FILE) as tmp:
        frame.to_parquet(tmp, index=False)
    store = FeatureStore(repo_path=str(repo_dir.resolve()), config=load_config(repo_dir))
    if apply:
        store.apply(load_definitions(repo_dir))
    return store
