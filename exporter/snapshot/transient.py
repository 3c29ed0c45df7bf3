"""Snapshot stage, transient errors: a tree whose walk met a network filesystem's passing error keeps its
previous complete numbers.

A permission error lasts: the partial numbers are the truth as far as the exporter can see, flagged by
``conda_env_scan_errors``. An ``ESTALE``, ``EIO``, ``ETIMEDOUT``, ... (kind ``transient``) does not: the
filer did not answer for part of the tree this time, and publishing numbers that drop by that part would
be wrong. So the tree's previous result is served again (its ``conda_env_last_scan_timestamp_seconds``
not advanced), the errors are still counted, and the daemon walks it again after a back-off
(:func:`retry_targets`). A tree with no previous result (the first scan, a new env) is published with its
partial numbers, flagged like any other error: leaving it out would read as an env that does not exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from exporter.model import TRANSIENT_KIND, EnvUsage, PkgsChunk, Snapshot, WalkError

__all__ = ["has_transient", "keep_chunk", "keep_env", "retry_paths"]


def has_transient(errors: Iterable[WalkError]) -> bool:
    return any(e.kind == TRANSIENT_KIND for e in errors)


def keep_env(new: EnvUsage, old: EnvUsage | None) -> EnvUsage:
    """``new``, or ``old`` (the previous complete result) when ``new``'s walk met a transient error."""
    if old is not None and has_transient(new.usage.errors) and not has_transient(old.usage.errors):
        return old
    return new


def keep_chunk(new: PkgsChunk, old_chunks: Sequence[PkgsChunk]) -> PkgsChunk:
    """``new``, or the previous walk of the same chunk (same package dirs) when ``new``'s met a transient
    error and that one did not."""
    if not has_transient(new.usage.errors):
        return new
    for old in old_chunks:
        if (old.package_dirs, old.include_top) == (new.package_dirs, new.include_top):
            return old if not has_transient(old.usage.errors) else new
    return new


def retry_paths(snapshot: Snapshot) -> set[tuple[str, str, str]]:
    """The trees the transient errors of ``snapshot`` (this scan's) were met in, as (``env`` or ``pkgs``,
    prefix or cache dir, root); an error below neither (``ROOT/envs`` itself) as (``root``, root, root)."""
    trees = [("env", e.prefix, e.root) for e in snapshot.envs] + [("pkgs", p.path, p.root) for p in snapshot.pkgs]
    found: set[tuple[str, str, str]] = set()
    for error in snapshot.errors:
        if error.kind != TRANSIENT_KIND:
            continue
        best: tuple[str, str, str] | None = None
        for kind, path, root in trees:
            inside = error.path == path or error.path.startswith(path.rstrip("/") + "/")
            if inside and (best is None or len(path) > len(best[1])):
                best = (kind, path, root)
        roots = [r.path for r in snapshot.roots if error.path.startswith(r.path.rstrip("/") + "/")]
        if best is not None:
            found.add(best)
        elif roots:
            root = max(roots, key=len)
            found.add(("root", root, root))
    return found
