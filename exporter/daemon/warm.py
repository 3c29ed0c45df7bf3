"""Daemon, published state: the fingerprints behind the numbers being served, kept across restarts.

Fingerprints are taken *before* the walks behind the published numbers: a change made during a walk
then differs at the next poll or start and is rescanned, never skipped. With a state file, the served
Snapshot and these fingerprints are saved (:mod:`exporter.daemon.state`), so a restart serves them at
once and rescans only the targets whose fingerprint changed meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence

from exporter.daemon.state import Fingerprints, load_state, save_state
from exporter.daemon.targets import Fingerprint, Target
from exporter.snapshot.store import SnapshotStore

__all__ = ["PublishedState"]

log = logging.getLogger(__name__)


class PublishedState:
    """``prints``: per target, the fingerprint behind the served numbers. ``state_file`` None: none is
    kept; it is written at most every ``save_interval`` seconds, and on a clean stop, never while the
    numbers served are not verified. After a warm start ``unverified`` stays True until a scan of
    everything (:meth:`scanned_all`) replaced the loaded numbers; ``verify_pending``: that scan is still
    to be started."""

    def __init__(self, store: SnapshotStore, state_file: str | None, save_interval: float) -> None:
        self.prints: dict[Target, Fingerprint] = {}
        self._store = store
        self._state_file = state_file
        self._save_interval = save_interval
        self._saved_at = 0.0
        self.unverified = False
        self.verify_pending = False

    def scanned_all(self, prints: Mapping[Target, Fingerprint]) -> None:
        """A scan of everything was published; ``prints`` were taken before its walks."""
        self.prints = dict(prints)
        self.unverified = False

    def rescanned(self, batch: Iterable[Target], prints: Mapping[Target, Fingerprint]) -> None:
        """The targets of ``batch`` were rescanned and published; ``prints`` were taken before."""
        batch = list(batch)
        if any(target.kind == "root" for target in batch):
            self.prints = dict(prints)  # a root's layout may have changed: every target is behind it
            return
        for target in batch:
            if target in prints:
                self.prints[target] = prints[target]

    def save(self, roots: Sequence[str]) -> None:
        """Write the state file, when there is one and the served numbers were confirmed by a scan."""
        snapshot = self._store.snapshot
        if not self._state_file or snapshot is None or not self._store.health().results_verified:
            return
        saved: Fingerprints = {
            (str(t.kind), t.path, t.root): [list(s) for s in stamps] for t, stamps in self.prints.items()
        }
        try:
            save_state(self._state_file, roots, snapshot, saved)
        except OSError as exc:
            log.warning("cannot write the state file %r: %s", self._state_file, exc)
        self._saved_at = time.monotonic()

    def maybe_save(self, roots: Sequence[str]) -> None:
        """:meth:`save`, unless the file was written less than ``save_interval`` seconds ago."""
        if self._state_file and time.monotonic() - self._saved_at >= self._save_interval:
            self.save(roots)

    def load(self, roots: Sequence[str], now: Mapping[Target, Fingerprint]) -> list[Target] | None:
        """Serve the state file's numbers at once, as not verified; the targets changed since it was written
        (as targets to rescan), or None when there is no usable file and everything must be scanned.
        ``now``: the fingerprints as they are."""
        if not self._state_file:
            return None
        loaded = load_state(self._state_file, roots)
        self._store.update_watch(state_loaded=loaded.result)
        if loaded.result != "ok" or loaded.snapshot is None:
            return None
        self._store.publish(loaded.snapshot, "state", verified=False)
        self.unverified = self.verify_pending = True
        saved = {Target(k[0], k[1], k[2]): tuple((s[0], s[1]) for s in v)  # type: ignore[arg-type]
                 for k, v in loaded.fingerprints.items()}
        self.prints = dict(now)
        changed = [t if t in now else Target("root", t.root, t.root)
                   for t in set(now) | set(saved) if now.get(t) != saved.get(t)]
        # Not verified even when nothing changed: matching fingerprints say nothing of the numbers (a
        # forged or stale file has them too); the daemon's confirming scan sets it.
        log.info("state file loaded: serving its numbers, %d target(s) changed since", len(changed))
        return changed
