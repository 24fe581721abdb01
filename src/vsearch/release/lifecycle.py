"""The release lifecycle: the only way a blessed model reaches live traffic.

::

    pipeline (blessed)         vsearch release approve      vsearch release ramp (x N-1)
    candidate indexed  ------> in_review ---------------> ab (step 1) ---------> ab (step N)
    (own collection,            report, gate,              share of users per        |
     <live>_candidate alias)    rollout plan               the plan's ramp           | vsearch release promote
                                    |                          |                     v
                                    +---- rollback ------------+-----> rolled_back <- promoted
                                                                        (rollback after promotion
                                                                         restores alias + champion)

* ``in_review``: the candidate is indexed and verified under the candidate alias, the plan
  (``rollout.yaml``) is written; the live alias and the registry have not moved.
* ``approve`` (a reviewer, named): the A/B test starts at the plan's first step.
* ``ramp``: the next step's share, only when ``vsearch rollout analyze`` recommends it
  (``--force`` with a reason overrides, and the override is recorded).
* ``promote``: at the last step, when the analysis recommends it: the live alias moves to the
  candidate's collection and the registry's champion to the candidate, together.
* ``rollback``: before promotion the treatment share drops to 0 (nothing live ever moved);
  after it, the live alias and the champion return to what they were, together (on a first
  deployment: no live alias, no champion).

`transition` is the pure rule; `Release` performs a transition's effects (Milvus aliases,
the registry, the plan's traffic share) and then appends the event to the release's log
(``<registry>/releases/<experiment id>/NNNNNN.json``, exclusive create: two operators cannot
both advance a release). Effects are idempotent, so rerunning a command after a crash
finishes it. Every step that sends traffic checks that each arm's alias points at a verified
collection its own model built (`vsearch.indexing.store.Store.check_embedding_space`).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from vsearch.config import ConfigError

IN_REVIEW, AB, PROMOTED, ROLLED_BACK = "in_review", "ab", "promoted", "rolled_back"
STATUSES = (IN_REVIEW, AB, PROMOTED, ROLLED_BACK)
ACTIONS = ("open", "approve", "ramp", "promote", "rollback")


class IllegalTransition(ConfigError):
    """The release is not in a state that allows this step (one line says why and what to do)."""


@dataclass(frozen=True)
class ReleaseState:
    """Where a release stands: ``status`` in `STATUSES`; ``step`` indexes the plan's ramp (AB)."""

    status: str
    step: int | None = None


def transition(state: ReleaseState | None, action: str, *, release: str, n_steps: int,
               recommendation: str | None = None, force: bool = False) -> ReleaseState:
    """The next state, or `IllegalTransition` (pure: no I/O).

    Args:
        state: the current state (None: the release has not been opened).
        action: one of `ACTIONS`.
        n_steps: the plan's number of ramp steps.
        recommendation: what ``vsearch rollout analyze`` recommends now (ramp, promote need it).
        force: an operator overrides the recommendation (with a recorded reason).
    """
    if action not in ACTIONS:
        raise IllegalTransition(f"release {release}: unknown action '{action}'")
    status = state.status if state else None
    if status == ROLLED_BACK:
        raise IllegalTransition(f"release {release} was rolled back: nothing more to do (a new candidate is a new release)")
    if action == "open":
        if state is not None:
            raise IllegalTransition(f"release {release} is already open ({status})")
        return ReleaseState(IN_REVIEW)
    if state is None:
        raise IllegalTransition(f"release {release} is not open: the pipeline opens it when the candidate is indexed")
    if action == "approve":
        if status != IN_REVIEW:
            raise IllegalTransition(f"release {release} is {status}: only a release in review can be approved")
        return ReleaseState(AB, 0)
    if action == "rollback":
        return ReleaseState(ROLLED_BACK, state.step)
    # ramp / promote
    if status == IN_REVIEW:
        raise IllegalTransition(f"release {release} is in review: a reviewer must `vsearch release approve` it before any {action}")
    if status == PROMOTED:
        raise IllegalTransition(f"release {release} is already promoted")
    last = state.step == n_steps - 1
    if action == "ramp" and last:
        raise IllegalTransition(f"release {release} is at the last ramp step ({n_steps} of {n_steps}): promote or roll back")
    if action == "promote" and not last:
        raise IllegalTransition(f"release {release} is at ramp step {state.step + 1} of {n_steps}: ramp to the last step before promoting")
    if not force and recommendation != action:
        raise IllegalTransition(f"release {release}: the A/B analysis recommends {recommendation or 'nothing yet (no analysis)'}, "
                                f"not {action}; run `vsearch rollout analyze`, or pass --force --reason TEXT")
    return ReleaseState(AB, state.step + 1) if action == "ramp" else ReleaseState(PROMOTED, state.step)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_actor() -> str:
    try:
        return os.environ.get("VSEARCH_ACTOR") or getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in a container
        return "unknown"


class Release:
    """One release: its plan (``rollout.yaml``), its event log, its Milvus and its registry."""

    def __init__(self, rollout_path: str | os.PathLike, *, registry: str | None = None, milvus_uri: str | None = None,
                 index_cfg=None):
        from vsearch.indexing.config import load_index_config
        from vsearch.registry import DEFAULT_STORE, Registry
        from vsearch.rollout.schema import load_rollout

        self.path = Path(rollout_path)
        self.plan = load_rollout(self.path)
        self.id = self.plan.experiment_id
        self.registry_uri = registry or self.plan.registry or os.environ.get("VSEARCH_REGISTRY", DEFAULT_STORE)
        self.milvus_uri = milvus_uri or self.plan.milvus_uri
        self.index_cfg = index_cfg or load_index_config(None, [])
        self.registry = Registry(self.registry_uri)
        self.log = Registry(self.registry_uri, folder=f"releases/{self.id}", version_key="event")

    def blessing_path(self) -> str:
        """The plan's blessing: relative to the plan's folder (where the writer copies it), or absolute/URI."""
        b = self.plan.blessing
        return b if "://" in b or Path(b).is_absolute() else str(self.path.parent / b)

    # ------------------------------------------------------------------ state
    def events(self) -> list[dict]:
        return self.log.history()

    def state(self) -> ReleaseState | None:
        head = self.log.head()
        return None if head is None else ReleaseState(head["status"], head.get("step"))

    def _append(self, action: str, new: ReleaseState, actor: str | None, note: str, **details) -> dict:
        head = self.log.head()
        version = (head["event"] if head else 0) + 1
        record = {"event": version, "release": self.id, "action": action, "status": new.status, "step": new.step,
                  "treatment_percent": self._share(new), "at": _now(), "actor": actor or default_actor(), "note": note, **details}
        self.log.create_exclusive(version, record)
        return record

    def _share(self, state: ReleaseState) -> float:
        if state.status == IN_REVIEW or (state.status == AB and state.step is not None):
            return self.plan.traffic.ramp[state.step or 0].treatment_percent
        return 100.0 if state.status == PROMOTED else 0.0

    def _write_share(self, share: float) -> None:
        """Rewrite the plan's current treatment share (atomic; the service re-reads the file)."""
        from vsearch.rollout.schema import dump_rollout, with_traffic

        if self.plan.traffic.treatment_percent != share:
            self.plan = with_traffic(self.plan, share)
            dump_rollout(self.plan, self.path)

    def _store(self):
        from vsearch.indexing.store import connect

        if not self.milvus_uri:
            raise ConfigError(f"release {self.id}: no Milvus URI (give --milvus-uri; the plan records none)")
        return connect(self.milvus_uri, self.index_cfg)

    def _check_arms(self, store, arms=("control", "treatment")) -> dict[str, str]:
        from vsearch.rollout.writer import arm_collections

        return arm_collections(store, self.plan, arms)

    def _next(self, action: str, *, recommendation: str | None = None, force: bool = False) -> tuple[ReleaseState | None, ReleaseState]:
        current = self.state()
        new = transition(current, action, release=self.id, n_steps=len(self.plan.traffic.ramp),
                         recommendation=recommendation, force=force)
        return current, new

    # ------------------------------------------------------------------ actions
    def open(self, actor: str | None = None, note: str = "candidate indexed, rollout plan written") -> dict:
        """in_review: both arms' aliases exist and were built by their arms' models."""
        _, new = self._next("open")
        with self._store() as store:
            collections = self._check_arms(store)
        return self._append("open", new, actor, note, collections=collections)

    def ensure_open(self, actor: str | None = None) -> None:
        if self.state() is None:
            self.open(actor)

    def approve(self, actor: str | None = None, note: str = "") -> dict:
        self.ensure_open(actor)
        _, new = self._next("approve")
        with self._store() as store:
            collections = self._check_arms(store)
        self._write_share(self._share(new))
        return self._append("approve", new, actor, note, collections=collections)

    def _recommendation(self, analysis: dict | None, step: int | None) -> str | None:
        from vsearch.schema import DataError

        if analysis is None:
            return None
        if analysis.get("experiment_id") != self.id:
            raise DataError("analysis.json", "the analysis is of another release", detail=str(analysis.get("experiment_id")))
        if step is None or analysis.get("step") != step + 1:
            raise DataError("analysis.json", "the analysis is of another ramp step (analyze again)",
                            detail=f"analysis step {analysis.get('step')}, release step {None if step is None else step + 1}")
        return analysis["recommendation"]

    def ramp(self, analysis: dict | None, *, actor: str | None = None, force_reason: str = "") -> dict:
        current = self.state()
        rec = self._recommendation(analysis, current.step if current else None) if analysis and current and current.status == AB else None
        _, new = self._next("ramp", recommendation=rec, force=bool(force_reason))
        with self._store() as store:
            collections = self._check_arms(store)
        self._write_share(self._share(new))
        return self._append("ramp", new, actor, force_reason or (analysis or {}).get("reason", ""), forced=bool(force_reason),
                            collections=collections)

    def promote(self, analysis: dict | None, *, actor: str | None = None, force_reason: str = "") -> dict:
        """Live alias -> the candidate's collection and registry champion -> the candidate, together."""
        from vsearch.schema import DataError

        current = self.state()
        rec = self._recommendation(analysis, current.step if current else None) if analysis and current and current.status == AB else None
        _, new = self._next("promote", recommendation=rec, force=bool(force_reason))
        live, treatment, control = self.plan.live_alias, self.plan.treatment, self.plan.control
        champion = self.registry.current()
        first = self.plan.rollback.restore_collection is None
        with self._store() as store:
            target = self._check_arms(store, ("treatment",))["treatment"]
            previous = store.alias_target(live)
            already = champion is not None and champion["model_version"] == treatment.model.version
            if not already:
                expected = None if first else control.model.version
                if (champion or {}).get("model_version") != expected:
                    raise DataError(self.path, "promotion refused: the registry's champion is not this release's control "
                                    "(another release moved it)", detail=f"registry {(champion or {}).get('model_version')}, "
                                    f"control {expected}")
                expected_live = None if first else control.milvus_collection
                if previous not in (expected_live, target):
                    raise DataError(self.path, "promotion refused: the live alias is not where this release's plan left it",
                                    detail=f"{live} -> {previous}, expected {expected_live}")
            if previous != target:
                store.move_alias(live, target)
            # The live alias now serves the candidate's vectors: only the candidate's model may query it.
            store.check_embedding_space(live, treatment.model.version, None)
        record = None if already else self.registry.promote(self.blessing_path(), treatment.model.uri, release=self.id,
                                                             drift_reference=treatment.model.drift_reference)
        self._write_share(100.0)
        return self._append("promote", new, actor, force_reason or (analysis or {}).get("reason", ""), forced=bool(force_reason),
                            live_alias=live, live_collection=target,
                            # previous == target: an interrupted promote already moved it; the plan knows what was live.
                            previous_live_collection=previous if previous != target else self.plan.rollback.restore_collection,
                            registry_version=(record or {}).get("registry_version"))

    def rollback(self, *, actor: str | None = None, reason: str = "") -> dict:
        """Stop the treatment; after a promotion also restore the live alias and the champion together."""
        current, new = self._next("rollback")
        details: dict = {}
        if current is not None and current.status == PROMOTED:
            promoted = next(e for e in reversed(self.events()) if e["action"] == "promote")
            live, control = self.plan.live_alias, self.plan.control
            restore = promoted.get("previous_live_collection")
            with self._store() as store:
                if restore is not None:
                    from vsearch.artifacts import model_embed_dim

                    # The restored collection must still be there, verified, and built by the model restored with it.
                    store.check_embedding_space(restore, control.model.version, model_embed_dim(control.model.uri))
                    if store.alias_target(live) != restore:
                        store.move_alias(live, restore)
                else:
                    store.drop_alias(live)
            champion = self.registry.current()
            if champion is not None and champion["model_version"] == self.plan.treatment.model.version:
                record = self.registry.rollback(reason=reason or "release rolled back", release=self.id)
                details["registry_version"] = record["registry_version"]
            details.update(live_alias=live, restored_collection=restore)
        self._write_share(0.0)
        return self._append("rollback", new, actor, reason, **details)

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        """State, traffic, each alias -> collection -> builder, the registry's champion, the legal next steps."""
        state = self.state()
        out = {"release": self.id, "status": state.status if state else "not opened", "plan": str(self.path),
               "step": None if not state or state.step is None else state.step + 1, "steps": len(self.plan.traffic.ramp),
               "treatment_percent": self.plan.traffic.treatment_percent,
               "champion": (self.registry.current() or {}).get("model_version"), "aliases": {}}
        if self.milvus_uri:
            with self._store() as store:
                for alias in dict.fromkeys([self.plan.live_alias, self.plan.control.milvus_alias, self.plan.treatment.milvus_alias]):
                    target = store.alias_target(alias)
                    record = (store.collection_record(target) or {}) if target else {}
                    out["aliases"][alias] = {"collection": target, "built_by": record.get("model_version"), "status": record.get("status")}
        out["arms"] = {name: {"model": v.model.version, "alias": v.milvus_alias} for name, v in self.plan.variants().items()}
        out["next"] = [a for a in ("approve", "ramp", "promote", "rollback") if _legal(state, a, len(self.plan.traffic.ramp))]
        out["events"] = [{k: e.get(k) for k in ("event", "at", "action", "status", "actor", "note")} for e in self.events()]
        return out


def _legal(state: ReleaseState | None, action: str, n_steps: int) -> bool:
    try:
        transition(state, action, release="-", n_steps=n_steps, force=True)
        return True
    except IllegalTransition:
        return False
