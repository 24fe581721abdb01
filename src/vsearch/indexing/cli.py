"""``vsearch index backfill | rollback | gc | status``.

Exit status: 0 done; 1 verification failed, nothing to roll back (the alias did not move; the
reason is printed) or the Milvus Lite database stayed locked by another process; 2 bad input
or config (one line, from the top-level CLI).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

DEFAULT_URI = "runs/milvus.db"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--milvus-uri", default=DEFAULT_URI, help=f"Milvus Lite .db path or http://host:port (default {DEFAULT_URI}); "
                   "token from the env var named in the index config (milvus.token_env)")
    p.add_argument("--index-config", default=None, help="index YAML (default: the packaged configs/index.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override an index setting, e.g. --set verify.min_recall=0.99")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vsearch index", description="Milvus: backfill a model's catalog embeddings, verify, move aliases.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("backfill", help="embed the catalog into the model's versioned collection, verify, move the alias")
    p.add_argument("--model", required=True, help="model folder (vsearch save_pretrained)")
    p.add_argument("--data", required=True, help="dataset folder with catalog.parquet")
    p.add_argument("--alias", default=None, help="alias to move once verified (omit to only build + verify)")
    p.add_argument("--verify-only", action="store_true", help="embed nothing: flush, index, verify and promote what is stored")
    p.add_argument("--tag", default="", help="suffix for the collection name (a new collection for the same model)")
    _common(p)
    p = sub.add_parser("rollback", help="move the alias back to the previous verified collection")
    p.add_argument("--alias", required=True)
    _common(p)
    p = sub.add_parser("gc", help="drop older versioned collections no alias points to")
    p.add_argument("--keep", type=int, required=True, help="keep this many newest versioned collections (aliased ones are always kept)")
    p.add_argument("--dry-run", action="store_true")
    _common(p)
    p = sub.add_parser("status", help="collections, their status, row counts now and when verified, aliases (JSON)")
    _common(p)
    return parser


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, default=str), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "gc" and args.keep < 0:
        parser.error("--keep must be >= 0")
    if args.command == "backfill" and args.tag and not re.fullmatch(r"[A-Za-z0-9_]{1,32}", args.tag):
        parser.error("--tag must be 1-32 letters, digits or underscores")
    from vsearch.indexing.config import load_index_config
    from vsearch.indexing.store import IndexError_, connect

    cfg = load_index_config(args.index_config, args.overrides)
    try:
        store = connect(args.milvus_uri, cfg)
    except IndexError_ as err:
        print(f"vsearch index {args.command}: {err}", file=sys.stderr, flush=True)
        return 1
    try:
        if args.command == "backfill":
            return _backfill(args, store, cfg)
        if args.command == "rollback":
            try:
                src, dst = store.rollback_alias(args.alias)
            except IndexError_ as err:
                print(f"vsearch index rollback: {err}", file=sys.stderr)
                return 1
            _print({"alias": args.alias, "from": src, "to": dst})
            return 0
        if args.command == "gc":
            _print(gc(store, args.keep, dry_run=args.dry_run))
            return 0
        _print(status(store))
        return 0
    finally:
        store.close()


def _backfill(args, store, cfg) -> int:
    from dataclasses import asdict

    from vsearch.indexing.backfill import VerificationError, backfill
    from vsearch.indexing.store import IndexError_

    def progress(msg: str) -> None:
        print(f"backfill: {msg}", flush=True)

    start = time.perf_counter()
    try:
        report = backfill(args.model, args.data, store, args.alias, cfg, write=not args.verify_only, tag=args.tag, progress=progress)
    except VerificationError as err:
        print(f"vsearch index backfill: {err}; alias '{args.alias}' left unchanged", file=sys.stderr, flush=True)
        return 1
    except IndexError_ as err:
        print(f"vsearch index backfill: {err}", file=sys.stderr, flush=True)
        return 1
    out = asdict(report)
    out["wall_s"] = round(time.perf_counter() - start, 3)
    out["write_rows_per_s"] = round(report.write_rows_per_s, 1)
    _print(out)
    return 0


def _rows_now(store, name: str) -> int | None:
    """Row count at Strong consistency, or None where the server wants the collection loaded first."""
    try:
        return store.count(name)
    except Exception:  # noqa: BLE001 - status reports what it can; a server refuses count on a released collection
        return None


def _servable(status: str | None, rows: int | None, verified_rows: int | None) -> bool | None:
    if status != "verified":
        return False
    if verified_rows is None:
        return True  # verified before its numbers were recorded: nothing to compare
    return None if rows is None else rows == verified_rows


def status(store) -> dict:
    """Every versioned collection: recorded status, rows now and as verified, aliases; every alias.

    ``servable`` is what ``index rollback`` requires: recorded ``verified`` and still holding
    the row count its verification measured (None: the server would not count it unloaded).
    """
    targets = store.all_alias_targets()
    records = store.records("collection:")
    cols = {}
    for name in store.versioned_collections():
        rec = records.get(name, {})
        rows = _rows_now(store, name)
        verified_rows = (rec.get("verify") or {}).get("rows") if rec.get("status") == "verified" else None
        cols[name] = {
            "status": rec.get("status", "unknown"),
            "rows": rows,
            "verified_rows": verified_rows,
            "servable": _servable(rec.get("status"), rows, verified_rows),
            "model_version": rec.get("model_version"),
            "created_at": rec.get("created_at"),
            "aliases": sorted(a for a, c in targets.items() if c == name),
        }
    return {"collections": cols, "aliases": {a: {"collection": c, "history": [h["collection"] for h in store.alias_history(a)]} for a, c in targets.items()}}


def gc(store, keep: int, *, dry_run: bool = False) -> dict:
    """Drop versioned collections beyond the ``keep`` newest (by creation), never an aliased one."""
    if keep < 0:
        raise ValueError("--keep must be >= 0")
    targets = set(store.all_alias_targets().values())
    records = store.records("collection:")
    names = store.versioned_collections()
    newest_first = sorted(names, key=lambda n: records.get(n, {}).get("created_at", 0.0), reverse=True)
    kept, dropped = [], []
    for i, name in enumerate(newest_first):
        if i < keep or name in targets:
            kept.append(name)
            continue
        if not dry_run:
            store.client.drop_collection(name)
            store.set_collection_status(name, status="dropped", dropped_at=time.time())
        dropped.append(name)
    return {"kept": kept, "dropped": dropped, "dry_run": dry_run}
