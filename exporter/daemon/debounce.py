"""Daemon, debounce: which targets changed, and which have been quiet long enough to rescan.

A pure object: every time is given by the caller (``time.monotonic()`` seconds), nothing is read from
a clock, nothing blocks, no lock is taken (the scheduler holds its own around every call). That keeps
the rule testable without threads or sleeps.
"""

from __future__ import annotations

from exporter.daemon.targets import Target

__all__ = ["DirtyTargets"]


class DirtyTargets:
    """Targets marked changed, each with the time of its last change and what noticed it.

    A target is *due* once ``debounce`` seconds passed since its last change. While a batch is being
    rescanned (between :meth:`begin_batch` and :meth:`end_batch`), a new change anywhere means a walk
    of the batch may have seen part of it: the batch's targets are then marked again, so link deltas
    are never applied on top of a walk that saw them.
    """

    def __init__(self, debounce: float) -> None:
        self.debounce = debounce
        self._changed: dict[Target, tuple[float, str]] = {}  # target -> (last change, trigger)
        self._busy = False
        self._changed_while_busy = False

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
            self._changed_while_busy = True

    def next_due(self) -> float:
        """When the earliest pending target becomes due; infinity when none is pending."""
        return min((at + self.debounce for at, _ in self._changed.values()), default=float("inf"))

    def take_due(self, now: float) -> dict[Target, str]:
        """Remove and return the targets due at ``now``, with the trigger that marked each."""
        due = [t for t, (at, _) in self._changed.items() if at + self.debounce <= now]
        return {t: self._changed.pop(t)[1] for t in due}

    def begin_batch(self) -> None:
        """A rescan starts."""
        self._busy = True
        self._changed_while_busy = False

    def end_batch(self, batch: dict[Target, str], now: float) -> None:
        """The rescan of ``batch`` ended at ``now``: mark its targets again if anything changed
        meanwhile (a target marked meanwhile keeps its own, later time)."""
        self._busy = False
        if self._changed_while_busy:
            for target, trigger in batch.items():
                self._changed.setdefault(target, (now, trigger))
