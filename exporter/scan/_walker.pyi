"""Types of the native walker (exporter/scan/_walker.c); the contract is exporter.scan.walk.walk_tree's."""

from collections.abc import Iterable, Sequence
from typing import final

@final
class WalkResult:
    """What ``walk`` found below a directory; named as :class:`exporter.scan.walk.TreeWalk`'s fields.

    A struct sequence (like ``os.stat_result``); typed here by field name only, which is how it is read.
    """

    @property
    def dirs(self) -> int: ...
    @property
    def files(self) -> int: ...
    @property
    def hardlinked_files(self) -> int: ...
    @property
    def apparent_bytes(self) -> int: ...
    @property
    def private_blocks(self) -> int: ...
    @property
    def skipped_mounts(self) -> int: ...
    @property
    def untracked_files(self) -> int: ...
    @property
    def untracked_blocks(self) -> int: ...
    @property
    def ino(self) -> bytes: ...
    @property
    def nlink(self) -> bytes: ...
    @property
    def blocks(self) -> bytes: ...
    @property
    def errors(self) -> list[tuple[int, str]]: ...
    @property
    def package_blocks(self) -> list[int]: ...
    @property
    def cached_single_blocks(self) -> list[int]: ...
    @property
    def uncached_single_blocks(self) -> list[int]: ...
    @property
    def extent_start(self) -> bytes: ...
    @property
    def extent_length(self) -> bytes: ...
    @property
    def extent_ino(self) -> bytes: ...

REPLACED: int
"""The errno of an error meaning: a directory was swapped for another between its listing and its opening."""
MAX_OPEN_DIRS: int
"""Directory fds one walk holds open at most."""

def walk(
    top: bytes,
    dev: int,
    ino: int,
    exclude: Iterable[str],
    cross: bool,
    files: Sequence[Sequence[str]] | None,
    relocated: Sequence[Iterable[str]],
    cache_entries: Sequence[str | None],
    map_extents: bool,
    map_hardlinked: bool,
    budget_fd: int,
    ns_per_path: int,
    batch: int,
    /,
) -> WalkResult: ...
