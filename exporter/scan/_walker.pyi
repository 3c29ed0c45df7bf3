"""Types of the native walker (exporter/scan/_walker.c); the contract is exporter.scan.walk.walk_tree's."""

from collections.abc import Iterable, Sequence

def walk(
    top: bytes,
    dev: int,
    exclude: Iterable[str],
    cross: bool,
    files: Sequence[Sequence[str]] | None,
    relocated: Sequence[Iterable[str]],
    cache_entries: Sequence[str | None],
    /,
) -> tuple[
    int, int, int, int, int, int, int, int, bytes, bytes, bytes, list[tuple[int, str]], list[int], list[int], list[int]
]: ...
