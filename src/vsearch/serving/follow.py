"""A search service that follows the champion: ``vsearch serve --champion-from REGISTRY``.

A promotion or a rollback (`vsearch.release`) moves the live alias to another model's
collection and the registry's champion to that model, together. A service serving the live
alias with ``--champion-from`` follows within one poll, without a gap and without ever sending
one model's query vectors to another model's collection:

1. Until the new champion is loaded, it answers with the pair it last verified: its own model
   on its own collection (`Searcher.pin_grace_s`; both still exist, a release never drops the
   collection it moved away from). At most ``grace_s`` seconds: past that, 503 (fail closed).
2. It follows only a consistent state: the registry's champion is the model that built the
   collection behind the alias. A promotion half done, or an alias moved by hand, is waited
   out (and said in ``/readyz`` through the pinned detail and in the log).
3. The champion's folder is fetched into ``models_dir/<version>`` (`vsearch.artifacts.fetch_model`,
   its content id checked against the registry's record), loaded, checked against the alias,
   then swapped in; a folder the follower fetched earlier is removed when replaced (the folder
   the service was started with never is).
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path


class ChampionFollower:
    """Polls the live alias and the registry for one searcher of a `ServiceState`."""

    def __init__(self, state, registry: str, models_dir: str | Path, *, name: str = "default",
                 grace_s: float = 300.0, device: str = "cpu"):
        self.state, self.registry, self.models_dir = state, str(registry), Path(models_dir)
        self.name, self.grace_s, self.device = name, float(grace_s), device
        self.state.searchers[name].pin_grace_s = self.grace_s
        self.last = ""
        self._fetched: set[Path] = set()

    def poll(self) -> str:
        """One look; loads and swaps in the champion when the alias and the registry agree on it.

        Returns:
            What it saw or did, one line (also kept in ``last``).
        """
        from vsearch.artifacts import fetch_model
        from vsearch.registry import Registry
        from vsearch.serving.search import Searcher

        searcher = self.state.searchers[self.name]
        store, alias = searcher.store, searcher.alias
        target = store.alias_target(alias)
        built_by = (store.collection_record(target) or {}).get("model_version") if target else None
        if built_by is None or built_by == searcher.version:
            self.last = f"serving {searcher.version} on '{alias}' -> {target}"
            return self.last
        champion = Registry(self.registry).current() or {}
        if champion.get("model_version") != built_by:
            self.last = (f"waiting: '{alias}' -> {target} was built by {built_by}, but the registry's champion is "
                         f"{champion.get('model_version', 'none')}; still serving {searcher.version}")
            return self.last
        path, _ = fetch_model(champion["model_uri"], self.models_dir / built_by, expected_version=built_by)
        new = Searcher(path, alias, store, searcher.cfg, device=self.device)
        new.prepare()  # the alias is checked again: moved once more meanwhile, nothing is swapped
        new.pin_grace_s = self.grace_s
        self.state.searchers = {**self.state.searchers, self.name: new}
        old = Path(searcher.model_dir)
        if old in self._fetched and old != Path(path):  # only a folder this follower fetched, never the one it was given
            shutil.rmtree(old, ignore_errors=True)
            self._fetched.discard(old)
        self._fetched.add(Path(path))
        self.last = f"followed the champion: {searcher.version} -> {new.version} (registry v{champion['registry_version']})"
        return self.last

    def run(self, stop: threading.Event, every_s: float = 10.0) -> None:
        """Poll every ``every_s`` seconds until ``stop`` is set; a failed poll is logged and retried."""
        while not stop.wait(every_s):
            before = self.last
            try:
                said = self.poll()
            except Exception as err:  # noqa: BLE001 - the service keeps answering; the next poll retries
                said = f"could not follow the champion: {type(err).__name__}: {err}"
            if said != before:
                print(f"vsearch serve: {said}", flush=True)

    def start(self, every_s: float = 10.0) -> threading.Event:
        """Run in a daemon thread; set the returned event to stop it."""
        stop = threading.Event()
        threading.Thread(target=self.run, args=(stop, every_s), name="champion-follower", daemon=True).start()
        return stop
