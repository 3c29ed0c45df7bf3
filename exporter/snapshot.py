"""Snapshot step: immutable, complete results of a scan, and the store that serves the latest one.

Collectors only ever read a :class:`Snapshot`; scans build a new one and swap it in whole, so a
scrape never sees half of a scan.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from exporter.account import TreeUsage
from exporter.pkgs import PkgsChunk
from exporter.walk import WalkError

__all__ = ["EnvUsage", "PkgsUsage", "RootUsage", "Snapshot", "SnapshotStore"]


@dataclass(frozen=True)
class EnvUsage:
    """One env's accounted usage; ``scanned_at`` is a Unix time in seconds."""

    root: str
    name: str
    prefix: str
    usage: TreeUsage
    scanned_at: float
    scan_seconds: float


@dataclass(frozen=True)
class PkgsUsage:
    """One package cache, from its chunks. Bytes are allocated bytes, each inode counted once."""

    root: str
    path: str
    bytes: int
    apparent_bytes: int
    packages: int
    unreferenced_packages: int
    unreferenced_bytes: int
    tarballs: int
    tarball_bytes: int
    chunks: tuple[PkgsChunk, ...]

    @property
    def errors(self) -> tuple[WalkError, ...]:
        return tuple(e for c in self.chunks for e in c.usage.errors)


@dataclass(frozen=True)
class RootUsage:
    """Totals of one root. ``bytes`` counts each inode of the whole installation once (``du -s``),
    ``apparent_bytes`` every path (``du -s -b -l``); filesystem figures come from ``statvfs``."""

    path: str
    bytes: int
    apparent_bytes: int
    envs: int
    ignored_dirs: int
    filesystem_size_bytes: int
    filesystem_avail_bytes: int


@dataclass(frozen=True)
class Snapshot:
    """Everything one complete scan found. ``completed_at`` is a Unix time in seconds."""

    roots: tuple[RootUsage, ...]
    envs: tuple[EnvUsage, ...]
    pkgs: tuple[PkgsUsage, ...]
    completed_at: float
    duration_seconds: float
    errors: tuple[WalkError, ...] = ()

    def error_counts(self) -> Counter[str]:
        return Counter(e.kind for e in self.errors)


@dataclass
class ScanHealth:
    """The exporter's own record of its scans, cumulative since start (counters only go up)."""

    errors_total: Counter[str] = field(default_factory=Counter)
    scans_total: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_success: bool = False
    last_success_at: float = 0.0
    last_duration_seconds: float = 0.0


class SnapshotStore:
    """Holds the latest complete :class:`Snapshot` and the scan health, safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._health = ScanHealth()
        self._ready = threading.Event()

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot  # a reference read is atomic; the object is immutable

    def publish(self, snapshot: Snapshot, trigger: str) -> None:
        """Swap in a complete scan result and count it."""
        with self._lock:
            self._snapshot = snapshot
            health = self._health
            health.errors_total.update(snapshot.error_counts())
            health.scans_total[(trigger, "success")] += 1
            health.last_success = True
            health.last_success_at = snapshot.completed_at
            health.last_duration_seconds = snapshot.duration_seconds
        self._ready.set()

    def record_failure(self, trigger: str, duration_seconds: float) -> None:
        """Count a scan that produced no snapshot (the previous one stays served)."""
        with self._lock:
            self._health.scans_total[(trigger, "error")] += 1
            self._health.last_success = False
            self._health.last_duration_seconds = duration_seconds

    def health(self) -> ScanHealth:
        """A copy of the health record, consistent at one instant."""
        with self._lock:
            h = self._health
            return ScanHealth(
                errors_total=Counter(h.errors_total),
                scans_total=Counter(h.scans_total),
                last_success=h.last_success,
                last_success_at=h.last_success_at,
                last_duration_seconds=h.last_duration_seconds,
            )

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)
