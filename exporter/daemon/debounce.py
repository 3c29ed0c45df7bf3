"""Daemon, debounce: which targets changed, and which have been quiet long enough to rescan.

A pure object: every time is given by the caller (``time.monotonic()`` seconds), nothing is read from
a clock, nothing blocks, no lock is taken (the scheduler holds its own around every call). That keeps
the rule testable without threads or sleeps.
"""

from __future__ import annotations

from collections.abc import Iterable

from exporter.daemon.retry import Retries
from exporter.daemon.targets import Target
from exporter.model import Snapshot

__all__ = ["DirtyTargets"]


class DirtyTargets:
    """Targets marked changed, each with the time of its last change and what noticed it.

    A target is *due* once ``debounce`` seconds passed since its last change. While a batch is being
    rescanned (between :meth:`begin_batch` and :meth:`end_batch`), only the targets marked meanwhile are
    due again later; the trees the batch walked become *suspects* of each of them: a walk may have seen
    part of that change, so when the changed target is rescanned (:meth:`take_suspects`), a suspect whose
    inodes its link delta touches is walked again instead of taking the delta twice
    (:func:`exporter.daemon.incremental.rescan`). A batch is never queued again as a whole: under churn
    elsewhere that rescanned the same, possibly vanished, trees over and over.

    A tree whose walk met a transient error (:mod:`exporter.daemon.retry`) is due again, as trigger ``retry``,
    once its back-off has passed.
    """

    def __init__(self, debounce: float) -> None:
        self.debounce = debounce
        self._changed: dict[Target, tuple[float, str]] = {}  # target -> (last change, trigger)
        self._busy = False
        self._changed_while_busy: set[Target] = set()
        self._suspects: dict[Target, set[str]] = {}  # changed target -> trees walked while it changed
        self.retries = Retries()

    def __len__(self) -> int:
        return len(self._changed)

    def __contains__(self, target: object) -> bool:
        return target in self._changed

    def mark(self, target: Target, trigger: str, now: float, restart: bool = True) -> None:
        """Note a change of ``target`` at ``now``. ``restart`` False keeps the time of an earlier,
        still pending change (a poll sees a difference, not when it happened)."""
        if restart or target not in self._changed:
            self._changed[target] = (now, trigger)
        if self._busy:
            self._changed_while_busy.add(target)

    def pending(self, trigger: str) -> bool:
        """Whether a target marked by ``trigger`` waits to be rescanned."""
        return any(t == trigger for _, t in self._changed.values())

    def next_due(self) -> float:
        """When the earliest pending target becomes due; infinity when none is pending."""
        changed = min((at + self.debounce for at, _ in self._changed.values()), default=float("inf"))
        return min(changed, self.retries.next_due())

    def take_due(self, now: float) -> dict[Target, str]:
        """Remove and return the targets due at ``now``, with the trigger that marked each."""
        due = [t for t, (at, _) in self._changed.items() if at + self.debounce <= now]
        found = {t: self._changed.pop(t)[1] for t in due}
        for target in self.retries.take_due(now):
            found.setdefault(target, "retry")
        return found

    def begin_batch(self) -> None:
        """A rescan starts."""
        self._busy = True
        self._changed_while_busy = set()

    def end_batch(
        self, walked: Iterable[str], full: bool = False, scanned: Snapshot | None = None, now: float = 0.0
    ) -> None:
        """The rescan ended, having walked the trees ``walked`` (env prefixes, cache dirs); ``full``: it
        walked everything, so earlier suspects are moot. Each target marked meanwhile (still pending, with
        its own time) gets ``walked`` as suspects. ``scanned``: the snapshot it published at ``now``, whose
        transient errors schedule retries."""
        self._busy = False
        walked = frozenset(walked)
        self.retries.after_scan(scanned, walked, now)
        if full:
            self._suspects.clear()
        if walked:
            for target in self._changed_while_busy:
                self._suspects.setdefault(target, set()).update(walked)
        self._changed_while_busy = set()

    def take_suspects(self, batch: Iterable[Target]) -> frozenset[str]:
        """Remove and return the suspects of the targets of ``batch`` (see the class doc)."""
        found: set[str] = set()
        for target in batch:
            found |= self._suspects.pop(target, set())
        return frozenset(found)
