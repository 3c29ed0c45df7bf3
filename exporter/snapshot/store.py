"""The snapshot stage's store: the latest complete :class:`~exporter.model.Snapshot`, and the exporter's
record of its own scans.

Collectors only ever read a Snapshot; scans build a new one and swap it in whole, so a scrape never
sees half of a scan.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field, replace

from exporter.model import Snapshot

__all__ = ["DURATION_BUCKETS", "ScanHealth", "SnapshotStore"]


@dataclass
class ScanHealth:
    """The exporter's own record of its scans, cumulative since start (counters only go up)."""

    errors_total: Counter[str] = field(default_factory=Counter)
    scans_total: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_success: bool = False
    last_success_at: float = 0.0
    last_duration_seconds: float = 0.0
    # Scan durations by trigger: cumulative counts per bucket of DURATION_BUCKETS, sum, count.
    duration_buckets: dict[str, list[int]] = field(default_factory=dict)
    duration_sum: dict[str, float] = field(default_factory=dict)
    # Change detection, set by the daemon: active mode ("inotify", "poll" or "" when not watching).
    watch_mode: str = ""
    watches: int = 0
    events_total: int = 0
    queue_overflows_total: int = 0
    watch_limit_reached: bool = False
    # False while serving numbers loaded from a state file that no scan has confirmed yet.
    results_verified: bool = True
    # How loading the state file went (ok, missing, corrupt, version, roots); "" without a state file.
    state_loaded: str = ""
    # Errors the daemon's scheduling loop survived, by reason (startup, loop); and why it stopped, if it did.
    daemon_errors_total: Counter[str] = field(default_factory=Counter)
    loop_failed: str = ""

    def copy(self) -> ScanHealth:
        """A deep copy: the containers too, so the copy never changes under its reader."""
        return replace(
            self,
            errors_total=Counter(self.errors_total),
            scans_total=Counter(self.scans_total),
            daemon_errors_total=Counter(self.daemon_errors_total),
            duration_buckets={k: list(v) for k, v in self.duration_buckets.items()},
            duration_sum=dict(self.duration_sum),
        )


DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
"""Upper bounds in seconds of the scan duration histogram (+Inf implied)."""


class SnapshotStore:
    """Holds the latest complete :class:`Snapshot` and the scan health, safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._health = ScanHealth()
        self._ready = threading.Event()
        self._version = 0

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot  # a reference read is atomic; the object is immutable

    @property
    def version(self) -> int:
        """Goes up with every change to the snapshot or the health record: what renders them can be
        reused while it stays the same (read it *before* rendering, so a change during the render
        only makes the next reader render again)."""
        return self._version

    def publish(self, snapshot: Snapshot, trigger: str, verified: bool = True) -> None:
        """Swap in a complete result and count it as one scan by ``trigger`` (startup, event, poll,
        reconcile or state). ``snapshot.errors`` are the errors of this scan only; ``verified`` is
        False for numbers loaded from a state file."""
        with self._lock:
            self._snapshot = snapshot
            health = self._health
            health.errors_total.update(snapshot.error_counts())
            health.scans_total[(trigger, "success")] += 1
            health.last_success = True
            health.last_success_at = snapshot.completed_at
            health.last_duration_seconds = snapshot.duration_seconds
            health.results_verified = verified
            self._observe(trigger, snapshot.duration_seconds)
            self._version += 1
        self._ready.set()

    def record_failure(self, trigger: str, duration_seconds: float) -> None:
        """Count a scan that produced no snapshot (the previous one stays served)."""
        with self._lock:
            self._health.scans_total[(trigger, "error")] += 1
            self._health.last_success = False
            self._health.last_duration_seconds = duration_seconds
            self._observe(trigger, duration_seconds)
            self._version += 1

    def _observe(self, trigger: str, seconds: float) -> None:
        buckets = self._health.duration_buckets.setdefault(trigger, [0] * (len(DURATION_BUCKETS) + 1))
        for i, bound in enumerate(DURATION_BUCKETS):
            if seconds <= bound:
                buckets[i] += 1
        buckets[-1] += 1
        self._health.duration_sum[trigger] = self._health.duration_sum.get(trigger, 0.0) + seconds

    def update_watch(self, **changes: object) -> None:
        """Set change-detection fields of the health record (watch_mode, watches, events_total, ...)."""
        with self._lock:
            for name, value in changes.items():
                if not hasattr(self._health, name):
                    raise AttributeError(name)
                setattr(self._health, name, value)
            self._version += 1

    def count_events(self, events: int = 0, overflows: int = 0) -> None:
        """Add to the received-event and queue-overflow counters."""
        with self._lock:
            self._health.events_total += events
            self._health.queue_overflows_total += overflows
            self._version += 1

    def count_daemon_error(self, reason: str) -> None:
        """Count an error the daemon's scheduling loop caught and survived (``reason``: where)."""
        with self._lock:
            self._health.daemon_errors_total[reason] += 1
            self._version += 1

    def set_loop_failed(self, reason: str) -> None:
        """The daemon's scheduling loop stopped for good: no scan will run again (see :meth:`alive`)."""
        with self._lock:
            self._health.loop_failed = reason or "stopped"
            self._version += 1

    def alive(self) -> tuple[bool, str]:
        """(False, why) once the scheduling loop has stopped for good, else (True, ""): what /healthz says."""
        with self._lock:
            failed = self._health.loop_failed
        return (not failed, failed)

    def health(self) -> ScanHealth:
        """A copy of the health record, consistent at one instant."""
        with self._lock:
            return self._health.copy()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)
