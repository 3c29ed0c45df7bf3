"""Result types shared by the stages, and the units they are in: what a scan hands to accounting, what
accounting hands to the snapshot, and what the snapshot hands to the collectors and the daemon.

Every type here is an immutable value (numpy columns are never written after construction). They live
in one module so that no stage imports a later one: discover -> scan -> account -> snapshot -> expose,
each importing only earlier stages and this module.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from exporter.config import Settings

__all__ = [
    "BLOCK_SIZE",
    "METADATA_DIR",
    "TRANSIENT_KIND",
    "EnvContents",
    "EnvUsage",
    "OwnerReclaim",
    "PkgsChunk",
    "PkgsUsage",
    "Reclaim",
    "RootUsage",
    "ScanOptions",
    "SharedInodes",
    "Snapshot",
    "StaleReclaim",
    "TreeUsage",
    "WalkError",
    "narrow_unsigned",
]

BLOCK_SIZE = 512
"""Unit of ``st_blocks`` on Linux, whatever the filesystem's block size."""

METADATA_DIR = "conda-meta"
"""The directory that makes a directory a conda env, and holds its package records."""

TRANSIENT_KIND = "transient"
"""The kind of a walk error a network filesystem gives and a later walk may not meet (ESTALE, EIO, ETIMEDOUT,
EINTR, ENOTCONN, EREMOTEIO, EHOSTDOWN): a tree whose walk met one keeps its previous numbers and is retried."""

U64 = npt.NDArray[np.uint64]
I32 = npt.NDArray[np.int32]
UInt = npt.NDArray[np.unsignedinteger[Any]]
"""A column in the narrowest unsigned dtype that holds its largest value (:func:`narrow_unsigned`)."""


def narrow_unsigned(values: npt.NDArray[np.integer[Any]]) -> UInt:
    """``values`` (none negative) as the narrowest of uint8, uint16, uint32 and uint64 that holds the largest:
    the same array when it already has that dtype, else a copy. A daemon keeps an inode number and three
    counts (links found, ``st_nlink``, ``st_blocks``) per hardlinked path, nearly always small: inode numbers
    fit 32 bits on ext4, the counts 8 to 32; so 5 to 12 bytes, not 32."""
    largest = int(values.max()) if len(values) else 0
    column: UInt = values.astype(np.min_scalar_type(largest), copy=False)
    return column


@dataclass(frozen=True)
class ScanOptions:
    """How to scan: ``workers`` processes (1 = in this process), whether to descend into mounts, how
    many biggest packages to report per env (0: none). Made from the settings, which hold the
    defaults; ``nice`` is not a setting: the daemon raises it for reconcile scans."""

    workers: int
    cross_filesystems: bool
    top_packages: int
    # Seconds since its last conda transaction after which an env counts as stale.
    stale_after: float
    # Added to the worker processes' nice value (reconcile scans run at low priority).
    nice: int = 0
    # The scan budget (exporter.scan.budget): paths per second over all workers (0: unlimited), for trees
    # on network filesystems only when ``max_rate_network_only`` (auto); ``budget_file`` is the bucket
    # shared by the workers (set while a scan runs) and ``budget_batch`` the paths one walk takes at once.
    max_rate: int = 0
    max_rate_network_only: bool = False
    budget_file: str = ""
    budget_batch: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> ScanOptions:
        from exporter.config import scan_rate  # (at run time only: config imports nothing of the stages)

        rate, network_only = scan_rate(settings)
        return cls(
            workers=settings.scan_workers,
            cross_filesystems=settings.scan_cross_filesystems,
            top_packages=settings.collect_packages,
            stale_after=settings.stale_after,
            max_rate=rate,
            max_rate_network_only=network_only,
        )


@dataclass(frozen=True)
class WalkError:
    """Something the walk could not read. ``kind`` is one of ``permission``, ``vanished``, ``io``,
    ``transient`` (a network filesystem's error that a later walk may not meet: ESTALE, EIO, ETIMEDOUT, ...;
    see :data:`TRANSIENT_KIND`) or ``metadata``."""

    kind: str
    path: str
    message: str


@dataclass(frozen=True)
class SharedInodes:
    """Inodes of one tree that have links outside it, one row per inode, sorted by ``ino``.

    ``found`` is the number of the inode's links inside the tree, ``nlink`` its ``st_nlink`` when
    walked, ``blocks`` its ``st_blocks`` (512-byte units). Each column is in the narrowest unsigned dtype
    that holds it (:func:`narrow_unsigned`; tables of one snapshot differ): comparing, sorting, searching,
    concatenating and summing them is exact as they are (numpy promotes unsigned to unsigned, and sums them
    as uint64), anything that can grow past the largest value (a product, a difference, a new value written
    in) widens first, e.g. ``astype(np.int64)``; never mix them with signed int64 (numpy would make float64).
    """

    dev: int
    ino: UInt
    nlink: UInt
    found: UInt
    blocks: UInt

    @classmethod
    def empty(cls, dev: int = 0) -> SharedInodes:
        none = np.zeros(0, dtype=np.uint8)
        return cls(dev, none, none, none, none)

    def __len__(self) -> int:
        return int(self.ino.shape[0])


@dataclass(frozen=True)
class TreeUsage:
    """Accounted usage of one tree (an env prefix or a package cache). Bytes are bytes.

    ``unique_bytes`` + ``shared_bytes`` equals ``du -s -B1`` of the tree, except on a filesystem that
    can reflink, where data that files share is counted once (:mod:`exporter.account.extents`);
    ``apparent_bytes`` equals ``du -s -b -l``; ``files`` counts non-directories (symlinks included),
    ``hardlinked_files`` those whose inode has ``st_nlink > 1``.

    ``extent_*`` (empty where nothing is shared by reflink): one row per extent the walk found flagged
    shared (of single-link files; in a package cache, of hardlinked ones too), its physical start and
    length in bytes on ``dev`` and the inode holding it when that is hardlinked (else 0).
    ``reflinked_bytes``: those extents' union, each byte once. ``extent_within_bytes``: the part of it the
    tree references at least twice; ``extent_unique_bytes``: the part of that counted in ``unique_bytes``
    (no other tree references it either).
    """

    path: str
    dev: int
    unique_bytes: int
    shared_bytes: int
    apparent_bytes: int
    dirs: int
    files: int
    hardlinked_files: int
    skipped_mounts: int
    errors: tuple[WalkError, ...]
    shared: SharedInodes
    extent_start: U64 = field(default_factory=lambda: np.zeros(0, np.uint64))
    extent_length: U64 = field(default_factory=lambda: np.zeros(0, np.uint64))
    extent_ino: U64 = field(default_factory=lambda: np.zeros(0, np.uint64))
    reflinked_bytes: int = 0
    extent_within_bytes: int = 0
    extent_unique_bytes: int = 0


@dataclass(frozen=True)
class PkgsChunk:
    """What one chunk of a package cache holds. Byte counts are allocated bytes."""

    pkgs_dir: str
    usage: TreeUsage
    packages: int
    unreferenced_packages: int
    unreferenced_bytes: int
    tarballs: int
    tarball_bytes: int
    index_cache_bytes: int = 0
    leftover_bytes: int = 0
    # What was walked, so that this chunk alone can be walked again.
    package_dirs: tuple[str, ...] = ()
    include_top: bool = False
    all_package_dirs: frozenset[str] = frozenset()
    # With include_top: the cache's channel/platform dirs (a mamba >= 2.6 cache), walked with it.
    levels: tuple[str, ...] = ()
    # For what deleting envs would free (exporter.account.reclaim), per entry of package_dirs: the
    # allocated bytes that removing it frees besides its rows in ``usage.shared`` (its directories and
    # single-link files), and whether conda clean removes it once none of its files has a second link
    # (a package dir read fully, none of whose inodes has two links in the cache).
    dir_private_bytes: tuple[int, ...] = ()
    cleanable: tuple[bool, ...] = ()
    # Per row of ``usage.shared``: the index in package_dirs of the cleanable package dir holding the
    # inode's one link in the cache, or -1.
    row_package: I32 = field(default_factory=lambda: np.zeros(0, np.int32))
    # Per row of ``usage``'s extents: the index in package_dirs of the package dir holding it, or -1.
    extent_package: I32 = field(default_factory=lambda: np.zeros(0, np.int32))


@dataclass(frozen=True)
class EnvContents:
    """What an env holds by conda's own records. Bytes are allocated bytes.

    ``untracked_*``: non-directories no package record lists (pip installs, caches, user files;
    ``conda-meta/`` itself excluded), each inode's bytes once. ``copied_bytes``: single-link regular
    files a package installed as a copy (link type copy, or the package's cache entry still holds the
    same path), prefix-rewritten files excluded. ``dedupable`` maps a package cache to the part of
    ``copied_bytes`` whose cache entry still exists there: what re-linking would save.
    ``last_transaction`` is the Unix time of ``conda-meta/history``'s last change, ``None`` without one.
    """

    packages: int = 0
    untracked_bytes: int = 0
    untracked_files: int = 0
    copied_bytes: int = 0
    dedupable: tuple[tuple[str, int], ...] = ()
    owner: str = ""
    python_version: str = ""
    last_transaction: float | None = None
    # (package name, allocated bytes of its paths in the env), biggest first; only with --collect.packages
    top_packages: tuple[tuple[str, int], ...] = ()
    # Cache entries (extracted package dirs) the env's records say its packages came from; None when
    # some record does not say, and so any cache entry may be involved.
    sources: tuple[str, ...] | None = ()


@dataclass(frozen=True)
class EnvUsage:
    """One env's accounted usage; ``scanned_at`` is a Unix time in seconds."""

    root: str
    name: str
    prefix: str
    usage: TreeUsage
    scanned_at: float
    scan_seconds: float
    contents: EnvContents = EnvContents()


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
    index_cache_bytes: int = 0
    leftover_bytes: int = 0

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
class OwnerReclaim:
    """One owner's envs in one root: how many, and what deleting them all and cleaning would free."""

    root: str
    owner: str
    envs: int
    bytes: int


@dataclass(frozen=True)
class StaleReclaim:
    """One root's stale envs (last conda transaction older than the stale age): how many, and what
    deleting them all and cleaning would free."""

    root: str
    envs: int
    bytes: int


@dataclass(frozen=True)
class Reclaim:
    """What deleting envs and then running ``conda clean --packages`` would free beyond what that clean
    alone frees, in allocated bytes (:mod:`exporter.account.reclaim`): per env (by prefix), per owner
    and root, and for each root's stale envs. The base env of a root, which conda cannot remove, is in
    neither an owner's nor the stale set. ``evaluated_at``: the Unix time staleness was judged at."""

    envs: tuple[tuple[str, int], ...] = ()
    owners: tuple[OwnerReclaim, ...] = ()
    stale: tuple[StaleReclaim, ...] = ()
    stale_after: float = 0.0
    evaluated_at: float = 0.0

    @cached_property
    def by_prefix(self) -> dict[str, int]:
        return dict(self.envs)


@dataclass(frozen=True)
class Snapshot:
    """Everything one complete scan found. ``completed_at`` is a Unix time in seconds."""

    roots: tuple[RootUsage, ...]
    envs: tuple[EnvUsage, ...]
    pkgs: tuple[PkgsUsage, ...]
    completed_at: float
    duration_seconds: float
    errors: tuple[WalkError, ...] = ()
    # Per root, the usage of what is neither an env nor a cache (ROOT/envs itself, non-env dirs in it),
    # kept so that root totals can be recomputed after rescanning one env.
    rest: tuple[tuple[str, TreeUsage], ...] = ()
    reclaim: Reclaim = Reclaim()

    def error_counts(self) -> Counter[str]:
        return Counter(e.kind for e in self.errors)

    @cached_property
    def oldest_scanned_at(self) -> float | None:
        """Unix time of the least recently computed env result, None without envs (computed once:
        every render of the self-metrics asks for it)."""
        return min((e.scanned_at for e in self.envs), default=None)

