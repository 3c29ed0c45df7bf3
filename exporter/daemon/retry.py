"""Daemon, retries: trees whose walk met a transient error are walked again after a back-off.

A pure object, as :mod:`exporter.daemon.debounce` is: every time is given by the caller
(``time.monotonic()`` seconds). The first retry of a tree comes :data:`RETRY_FIRST` seconds after the scan
that met the error, each next one twice as late, at most :data:`RETRY_MAX`; a walk of the tree without
a transient error ends its retries. Meanwhile the tree keeps its previous numbers
(:mod:`exporter.snapshot.transient`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from exporter.daemon.targets import Target
from exporter.model import Snapshot
from exporter.snapshot.transient import retry_paths

__all__ = ["RETRY_FIRST", "RETRY_MAX", "Retries"]

log = logging.getLogger(__name__)

RETRY_FIRST = 5.0
RETRY_MAX = 600.0


class Retries:
    """Per target: how many walks in a row met a transient error, and when it is walked again."""

    def __init__(self, first: float = RETRY_FIRST, most: float = RETRY_MAX) -> None:
        self.first = first
        self.most = most
        self._failed: dict[Target, tuple[int, float]] = {}  # target -> (failures in a row, due)
        self._waiting: set[Target] = set()  # due and handed out, not yet walked again

    def __len__(self) -> int:
        return len(self._failed)

    def scanned(self, failed: Iterable[Target], walked: Iterable[str], now: float) -> None:
        """A scan at ``now`` walked the trees ``walked`` (env prefixes, cache dirs; a root's own path for a
        full scan) and met a transient error in ``failed``: those are due again after their back-off, the
        other walked ones are done."""
        failed = set(failed)
        walked = set(walked)
        for target in list(self._failed):
            if target not in failed and target.path in walked:
                del self._failed[target]
                self._waiting.discard(target)
        for target in failed:
            count = self._failed.get(target, (0, 0.0))[0] + 1
            self._failed[target] = (count, now + min(self.first * 2 ** (count - 1), self.most))
            self._waiting.discard(target)

    def after_scan(self, snapshot: Snapshot | None, walked: Iterable[str], now: float) -> None:
        """:meth:`scanned`, for the trees of ``snapshot`` (the result a scan published, None if it failed)
        whose walk met a transient error."""
        walked = frozenset(walked)
        if snapshot is None or not walked:
            return
        failed = {Target(kind, path, root) for kind, path, root in retry_paths(snapshot)}  # type: ignore[arg-type]
        for target in sorted(failed):
            log.warning("transient error walking %s: walking it again later; its previous numbers, if it has "
                        "any, stay served meanwhile", target.path)
        self.scanned(failed, walked, now)

    def next_due(self) -> float:
        """When the earliest retry is due; infinity when none is waiting."""
        return min((due for t, (_, due) in self._failed.items() if t not in self._waiting), default=float("inf"))

    def take_due(self, now: float) -> list[Target]:
        """The targets due for a retry at ``now`` (each handed out once per failure)."""
        due = sorted(t for t, (_, at) in self._failed.items() if at <= now and t not in self._waiting)
        self._waiting.update(due)
        return due
