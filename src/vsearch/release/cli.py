"""``vsearch release status | approve | ramp | promote | rollback --rollout rollout.yaml``.

The human steps of the release lifecycle (`vsearch.release.lifecycle`). An illegal step (a
promotion before approval, a ramp the analysis does not recommend, a mismatched model and
collection ...) ends with one line and exit status 2; nothing moved.
"""

from __future__ import annotations

import argparse
import json


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vsearch release", description="Drive a release: review -> A/B ramp -> promote or roll back.")
    sub = parser.add_subparsers(dest="action", required=True)
    helps = {
        "status": "where the release stands, its aliases and collections, the legal next steps (JSON)",
        "approve": "a reviewer approves: the A/B test starts at the plan's first ramp step",
        "ramp": "next ramp step (needs an analysis that recommends it, or --force --reason)",
        "promote": "at the last step: live alias and registry champion move to the candidate together",
        "rollback": "stop the treatment; after a promotion also restore the live alias and the champion",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("--rollout", required=True, help="the release's plan (rollout.yaml written by the pipeline)")
        p.add_argument("--registry", help="champion registry (default: the plan's, else $VSEARCH_REGISTRY)")
        p.add_argument("--milvus-uri", help="Milvus Lite .db or http://host:port (default: the plan's)")
        if name != "status":
            p.add_argument("--actor", help="who takes this step (default: $VSEARCH_ACTOR or the login name)")
        if name in ("approve", "rollback"):
            p.add_argument("--note" if name == "approve" else "--reason", default="", help="recorded with the event")
        if name in ("ramp", "promote"):
            p.add_argument("--analysis", help="analysis.json (or its folder) from `vsearch rollout analyze`")
            p.add_argument("--force", action="store_true", help="override the analysis (needs --reason)")
            p.add_argument("--reason", default="", help="why the override (recorded)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from vsearch.config import ConfigError
    from vsearch.indexing.store import IndexError_
    from vsearch.release.lifecycle import Release
    from vsearch.rollout.analyze import read_analysis

    args = _parser().parse_args(argv)
    release = Release(args.rollout, registry=args.registry, milvus_uri=args.milvus_uri)
    try:
        if args.action == "status":
            print(json.dumps(release.status(), indent=2))
            return 0
        if args.action in ("ramp", "promote") and args.force and not args.reason.strip():
            raise ConfigError(f"release {release.id}: --force needs --reason TEXT (it is recorded)")
        if args.action == "approve":
            event = release.approve(args.actor, args.note)
        elif args.action == "rollback":
            event = release.rollback(actor=args.actor, reason=args.reason)
        else:
            analysis = read_analysis(args.analysis) if args.analysis else None
            step = release.ramp if args.action == "ramp" else release.promote
            event = step(analysis, actor=args.actor, force_reason=args.reason if args.force else "")
    except IndexError_ as err:  # an alias missing or a model/collection mismatch: refuse, move nothing
        raise ConfigError(f"release {release.id}: {err}") from err
    print(f"release {release.id}: {event['action']} -> {event['status']}"
          + (f", treatment {event['treatment_percent']:g}% of users" if event["status"] in ("ab", "rolled_back") else ""))
    return 0
