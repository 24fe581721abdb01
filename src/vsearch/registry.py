"""The champion registry: which model serves now, and how it got there.

A registry is a folder in the artifact store (a local folder by default, any fsspec URI
otherwise) holding an append-only log of JSON records, one per change::

    <store>/records/000001.json   {"registry_version": 1, "action": "promote", "champion": {...}, ...}
    <store>/records/000002.json   ...

The current state is the record with the highest version. A change is a compare-and-swap on
the version it was based on: record ``N+1`` is created with an *exclusive* create (a hard
link of a fully written temp file on local disks; ``mode="xb"`` on other fsspec stores), so
of two concurrent promotions based on version ``N`` exactly one creates ``N+1`` and the
other gets `RegistryConflict`; on local disks a reader never sees a half-written record.
On object stores the guarantee is the backend's: ``mode="xb"`` must map to a conditional
create (e.g. S3 ``If-None-Match: *``); a backend without it is refused, not trusted.

Promotion only through a blessing: ``promote`` requires a blessed ``blessing.json`` whose
candidate version equals the model folder's content hash (`vsearch.artifacts.model_version`)
and whose champion is the registry's current champion (a blessing judged against another
champion is stale). ``rollback`` restores the champion the current one replaced (rolling
back the first promotion leaves no champion). Champions are recorded by their durable model
URI (a local folder, or ``s3://...``), never by the path a pipeline pod happened to mount them
at. In production the release lifecycle (`vsearch.release`) promotes and rolls back, moving
the live Milvus alias together with the champion.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from datetime import datetime, timezone

from vsearch.config import ConfigError

SCHEMA_VERSION = 1
RECORDS = "records"
DEFAULT_STORE = "vsearch-registry"


class RegistryConflict(ConfigError):
    """Another change landed first (compare-and-swap failed): re-read and retry."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Registry:
    """A champion registry at ``store`` (local path or fsspec URI)."""

    def __init__(self, store: str | os.PathLike = DEFAULT_STORE, *, folder: str = RECORDS, version_key: str = "registry_version"):
        """``folder``/``version_key``: another append-only log in the same store (a release's
        events live in ``releases/<id>``, numbered by ``event``) with the same guarantees."""
        import fsspec

        self.store = str(store)
        self.fs, root = fsspec.core.url_to_fs(self.store)
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        self.root = root.rstrip("/") or "/"
        self.folder, self.version_key = folder, version_key
        self.records_dir = posixpath.join(self.root, folder)

    # ------------------------------------------------------------------ reading

    def _record_path(self, version: int) -> str:
        return posixpath.join(self.records_dir, f"{version:06d}.json")

    def versions(self) -> list[int]:
        if not self.fs.exists(self.records_dir):
            return []
        out = []
        for path in self.fs.ls(self.records_dir, detail=False):
            name = posixpath.basename(str(path).rstrip("/"))
            if name.endswith(".json") and name[:-5].isdigit():
                out.append(int(name[:-5]))
        return sorted(out)

    def record(self, version: int) -> dict:
        from vsearch.schema import DataError

        path = self._record_path(version)
        try:
            with self.fs.open(path, "rb") as fh:
                record = json.loads(fh.read().decode())
        except (OSError, ValueError) as err:
            raise DataError(f"{self.store}/{self.folder}/{version:06d}.json", "unreadable registry record", detail=str(err)) from err
        if not isinstance(record, dict) or record.get(self.version_key) != version:
            raise DataError(f"{self.store}/{self.folder}/{version:06d}.json", "registry record names another version")
        return record

    def head(self) -> dict | None:
        """The latest record (None for an empty registry)."""
        versions = self.versions()
        return self.record(versions[-1]) if versions else None

    def current(self) -> dict | None:
        """The current champion entry plus ``registry_version``, or None if there is none."""
        head = self.head()
        if head is None or head.get("champion") is None:
            return None
        return {**head["champion"], "registry_version": head["registry_version"]}

    def history(self) -> list[dict]:
        return [self.record(v) for v in self.versions()]

    # ------------------------------------------------------------------ writing

    def create_exclusive(self, version: int, record: dict) -> None:
        """Create record ``version`` of this log; `RegistryConflict` if someone else did first."""
        self._create_exclusive(version, record)

    def _create_exclusive(self, version: int, record: dict) -> None:
        """Create record ``version``; RegistryConflict if it already exists (the CAS)."""
        payload = json.dumps(record, indent=2).encode()
        path = self._record_path(version)
        self.fs.makedirs(self.records_dir, exist_ok=True)
        if self.local:
            tmp = posixpath.join(self.records_dir, f".tmp-{uuid.uuid4().hex}")
            with open(tmp, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # atomic, fails if the target exists: the compare-and-swap
            except FileExistsError:
                raise RegistryConflict(
                    f"{self.store}: registry version {version} was written by someone else first; re-read and retry"
                ) from None
            finally:
                os.unlink(tmp)
            return
        try:
            with self.fs.open(path, "xb") as fh:
                fh.write(payload)
        except FileExistsError:
            raise RegistryConflict(f"{self.store}: registry version {version} was written by someone else first; re-read and retry") from None
        except (NotImplementedError, ValueError) as err:
            raise ConfigError(f"{self.store}: this storage backend has no exclusive create; the registry needs one ({err})") from err

    def _commit(self, expected_version: int | None, action: str, champion: dict | None, previous: int | None, **extra) -> dict:
        head = self.head()
        head_version = head["registry_version"] if head else 0
        if expected_version is not None and expected_version != head_version:
            raise RegistryConflict(f"{self.store}: expected registry version {expected_version}, found {head_version}")
        base = head_version if expected_version is None else expected_version
        record = {
            "schema_version": SCHEMA_VERSION,
            "registry_version": base + 1,
            "based_on": base,
            "action": action,
            "at": _now(),
            "champion": champion,
            "replaces": previous,
            **extra,
        }
        self._create_exclusive(base + 1, record)
        return record

    def promote(self, blessing_path: str | os.PathLike, model_uri: str | None = None, *, expected_version: int | None = None,
                drift_reference: str | None = None, **extra) -> dict:
        """Make the blessed candidate the champion (see the module docstring for the rules).

        Args:
            blessing_path: blessing.json (or its folder) written by ``vsearch gate``.
            model_uri: the candidate model folder or fsspec URI; default: the one the blessing names.
            expected_version: the registry version this promotion is based on (default: the
                version read now); a different head raises `RegistryConflict`.
            drift_reference: the candidate's drift reference snapshot (folder or URI): the champion
                entry records its durable URI, the monitoring pipeline's ``reference_uri``.
            extra: recorded with the change (e.g. ``release=<experiment id>``).
        """
        from vsearch.artifacts import durable_uri, is_model_dir, model_version
        from vsearch.blessing import blessing_path as _blessing_file
        from vsearch.blessing import read_blessing
        from vsearch.schema import DataError

        blessing = read_blessing(blessing_path)
        where = str(blessing_path)
        if not blessing.blessed:
            raise DataError(where, "promotion needs a blessed candidate", detail=blessing.reason)
        candidate = blessing.candidate
        model_uri = str(model_uri or candidate.model_uri or "")
        if not model_uri or not is_model_dir(model_uri):
            raise DataError(where, "the candidate model folder is not available", detail=model_uri or "(none named)")
        actual = model_version(model_uri)
        if candidate.version != actual:
            raise DataError(where, "the blessing names another model than the one promoted",
                            detail=f"blessed {candidate.version}, folder {model_uri} is {actual}")
        head = self.head()
        if expected_version is not None and (head["registry_version"] if head else 0) != expected_version:
            raise RegistryConflict(f"{self.store}: expected registry version {expected_version}, "
                                   f"found {head['registry_version'] if head else 0}")
        current = head.get("champion") if head else None
        judged = blessing.champion.version if blessing.champion else None
        if current is not None and current["model_version"] == actual:
            raise DataError(where, "this model is already the champion", detail=actual)
        if (current or {}).get("model_version") != judged:
            raise DataError(where, "stale blessing: it was judged against another champion than the registry's",
                            detail=f"blessing champion {judged}, registry champion {(current or {}).get('model_version')}")
        champion = {
            "model_version": actual,
            "model_uri": durable_uri(model_uri),
            "drift_reference": durable_uri(drift_reference) if drift_reference else None,
            "name": candidate.name,
            "blessing": str(_blessing_file(blessing_path).resolve()),
            "blessing_reason": blessing.reason,
            "data_fingerprint": blessing.data.get("fingerprint"),
            "lineage": dict(blessing.lineage),  # the code and the KFP run that judged it ({} for older blessings)
            "promoted_at": _now(),
        }
        return self._commit(head["registry_version"] if head else 0, "promote", champion, head["registry_version"] if head else None,
                            **extra)

    def rollback(self, *, expected_version: int | None = None, reason: str = "", **extra) -> dict:
        """Restore the champion that the current one replaced (one step back per call).

        Rolling back the first promotion restores "no champion yet" (champion None).
        """
        head = self.head()
        if head is None or head.get("champion") is None:
            raise ConfigError(f"{self.store}: nothing to roll back (no champion)")
        base = head["registry_version"]
        if expected_version is not None and expected_version != base:
            raise RegistryConflict(f"{self.store}: expected registry version {expected_version}, found {base}")
        if head.get("replaces") is None:
            return self._commit(base, "rollback", None, None, rolled_back=head["champion"]["model_version"], reason=reason, **extra)
        restored = self.record(head["replaces"])
        return self._commit(base, "rollback", restored["champion"], restored.get("replaces"),
                            rolled_back=(head.get("champion") or {}).get("model_version"), reason=reason, **extra)


def _print_record(record: dict | None) -> None:
    print(json.dumps(record, indent=2))


def _fetch(registry: "Registry", out: str) -> int:
    """The champion's model folder at ``out``, checked against the content id the registry recorded."""
    from vsearch.artifacts import check_out, fetch_model
    from vsearch.schema import DataError

    current = registry.current()
    if current is None:
        raise DataError(registry.store, "the registry has no champion: nothing to serve yet (promote a blessed model first)")
    check_out(out)
    path, downloaded = fetch_model(current["model_uri"], out, expected_version=current["model_version"])
    how = "fetched from" if downloaded else "already here, from"
    print(f"champion {current['model_version']} (registry v{current['registry_version']}) {how} {current['model_uri']} -> {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``vsearch registry [--store URI] show | history | fetch --out DIR | promote --blessing PATH [--model DIR] [--reference SNAPSHOT]
    [--expected-version N] | rollback [--reason TEXT] [--expected-version N]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="vsearch registry", description="Champion registry (JSON records in an fsspec store).")
    parser.add_argument("--store", default=os.environ.get("VSEARCH_REGISTRY", DEFAULT_STORE),
                        help=f"registry folder or fsspec URI (default: $VSEARCH_REGISTRY or ./{DEFAULT_STORE})")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("show", help="the current champion")
    sub.add_parser("history", help="every change, oldest first")
    promote = sub.add_parser("promote", help="make a blessed candidate the champion")
    promote.add_argument("--blessing", required=True, help="blessing.json (or its folder) from vsearch gate")
    promote.add_argument("--model", help="candidate model folder (default: the one the blessing names)")
    promote.add_argument("--reference", help="the candidate's drift reference (snapshot folder or URI), recorded with it")
    promote.add_argument("--expected-version", type=int, help="fail unless the registry is at this version")
    fetch = sub.add_parser("fetch", help="copy the champion's model folder here (what the search service serves)")
    fetch.add_argument("--out", required=True, help="local folder to publish the champion's model folder at")
    rollback = sub.add_parser("rollback", help="restore the previous champion")
    rollback.add_argument("--expected-version", type=int)
    rollback.add_argument("--reason", default="")
    args = parser.parse_args(argv)
    registry = Registry(args.store)
    if args.action == "show":
        current = registry.current()
        _print_record(current)
        return 0
    if args.action == "history":
        for record in registry.history():
            champ = record.get("champion") or {}
            print(f"v{record['registry_version']:<4} {record['at']}  {record['action']:<8} -> "
                  f"{champ.get('model_version', '-')} ({champ.get('name', '-')})")
        return 0
    if args.action == "fetch":
        return _fetch(registry, args.out)
    if args.action == "promote":
        record = registry.promote(args.blessing, args.model, expected_version=args.expected_version,
                                  drift_reference=args.reference)
    else:
        record = registry.rollback(expected_version=args.expected_version, reason=args.reason)
    print(f"registry v{record['registry_version']}: {record['action']} -> champion "
          f"{(record['champion'] or {}).get('model_version', 'none (no champion)')}")
    return 0
