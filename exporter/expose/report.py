"""``conda-env-exporter report``: a hardlink-aware ``du`` for conda, for people (a table), scripts (JSON) and
spreadsheets (CSV), its envs in the order ``--sort`` names (:data:`~exporter.expose.page_model.SORT_KEYS`).

``report --format json`` prints one object, stable (fields are only ever added)::

    {"envs": [{"root", "name", "prefix", "owner", "python_version",        # strings
               "unique_bytes", "shared_bytes", "apparent_bytes",           # allocated bytes (apparent: st_size)
               "reclaimable_bytes",                                        # bytes, null when not computed
               "files", "hardlinked_files", "packages",                    # counts
               "untracked_bytes", "copied_bytes",                          # bytes
               "last_transaction",                                         # Unix seconds, null without history
               "scan_errors"}, ...],                                       # count
     "caches": [{"root", "path", "bytes", "apparent_bytes", "packages", "unreferenced_packages",
                 "unreferenced_bytes", "tarballs", "tarball_bytes", "index_cache_bytes", "leftover_bytes"}, ...],
     "owners": [{"root", "owner", "envs", "reclaimable_bytes"}, ...],
     "stale":  [{"root", "envs", "reclaimable_bytes", "stale_after_seconds"}, ...],
     "roots":  [{"path", "bytes", "apparent_bytes", "envs", "ignored_dirs",
                 "filesystem_size_bytes", "filesystem_avail_bytes"}, ...],
     "scan_errors": 3,                 # paths the scan could not read
     "completed_at": 1767225600.0,     # Unix seconds: when the scan finished
     "sort": "unique"}                 # the --sort key the envs are in

The env fields are those of the page's env table (:class:`~exporter.expose.page_model.EnvRow`). Names that
are not UTF-8 keep their bytes as ``\\udcXX`` surrogates escaped by JSON. ``--format csv`` prints the env
list alone, one row per env under a header row of the same field names.

``report --what-if-delete ENV ...`` tells what deleting those envs and then running ``conda clean
--packages`` would free, and which package dirs that clean would then remove.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from exporter.account.reclaim import CacheIndex, reclaimable
from exporter.expose.page_model import DEFAULT_SORT, EnvRow, env_csv, env_rows, human_bytes, sort_rows
from exporter.model import EnvUsage, Snapshot

__all__ = [
    "EnvNotFoundError", "human_bytes", "match_envs", "render_report", "render_what_if", "report_csv", "report_json",
]


class EnvNotFoundError(ValueError):
    """A name or prefix given to ``--what-if-delete`` matches no env, or a name matches several."""


def _printable(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def render_report(snapshot: Snapshot, sort: str = DEFAULT_SORT) -> str:
    """Envs in the order of ``sort`` (by default unique bytes: what deleting them frees at once), with what
    deleting each and cleaning the cache frees; then package caches, owners, stale envs and root totals."""
    header = ("ENV", "UNIQUE", "RECLAIMABLE", "SHARED", "APPARENT", "FILES", "HARDLINKED", "OWNER", "PREFIX")
    rows: list[tuple[str, ...]] = [header]
    for env in sort_rows(env_rows(snapshot), sort):
        share = f"{100 * env.hardlinked_files / env.files:.0f}%" if env.files else "-"
        rows.append((
            _printable(env.name), human_bytes(env.unique_bytes), human_bytes(env.reclaimable_bytes or 0),
            human_bytes(env.shared_bytes), human_bytes(env.apparent_bytes), str(env.files), share,
            _printable(env.owner), _printable(env.prefix),
        ))
    lines = [*_table(rows), ""]
    for cache in snapshot.pkgs:
        lines.append(
            f"package cache {_printable(cache.path)}: {human_bytes(cache.bytes)} in {cache.packages} packages; "
            f"reclaimable: {human_bytes(cache.unreferenced_bytes)} in {cache.unreferenced_packages} unused "
            f"packages (conda clean -p), {human_bytes(cache.tarball_bytes)} in {cache.tarballs} tarballs "
            f"(conda clean -t)"
        )
    if snapshot.reclaim.owners:
        owners: list[tuple[str, ...]] = [("OWNER", "ENVS", "RECLAIMABLE", "ROOT")]
        owners += [(_printable(o.owner), str(o.envs), human_bytes(o.bytes), _printable(o.root) or "-")
                   for o in sorted(snapshot.reclaim.owners, key=lambda o: (-o.bytes, o.root, o.owner))]
        lines += ["", *_table(owners), ""]
    days = snapshot.reclaim.stale_after / 86400
    for stale in snapshot.reclaim.stale:
        lines.append(f"root {_printable(stale.root)}: {stale.envs} env(s) idle for over {days:g} days; deleting "
                     f"them and cleaning frees {human_bytes(stale.bytes)}")
    for root in snapshot.roots:
        saved = root.apparent_bytes - root.bytes
        lines.append(
            f"root {_printable(root.path)}: {human_bytes(root.bytes)} on disk, "
            f"{human_bytes(root.apparent_bytes)} without hardlinks (saved {human_bytes(saved)}); "
            f"{root.envs} envs"
        )
    if snapshot.errors:
        lines.append(f"{len(snapshot.errors)} path(s) could not be read; see the log for details")
    return "\n".join(lines) + "\n"


def report_json(snapshot: Snapshot, sort: str = DEFAULT_SORT) -> str:
    """The report as one JSON object of the shape the module docstring gives, envs in the order of ``sort``."""
    envs: list[EnvRow] = sort_rows(env_rows(snapshot), sort)
    document = {
        "envs": [row.as_dict() for row in envs],
        "caches": [{"root": c.root, "path": c.path, "bytes": c.bytes, "apparent_bytes": c.apparent_bytes,
                    "packages": c.packages, "unreferenced_packages": c.unreferenced_packages,
                    "unreferenced_bytes": c.unreferenced_bytes, "tarballs": c.tarballs,
                    "tarball_bytes": c.tarball_bytes, "index_cache_bytes": c.index_cache_bytes,
                    "leftover_bytes": c.leftover_bytes} for c in snapshot.pkgs],
        "owners": [{"root": o.root, "owner": o.owner, "envs": o.envs, "reclaimable_bytes": o.bytes}
                   for o in snapshot.reclaim.owners],
        "stale": [{"root": s.root, "envs": s.envs, "reclaimable_bytes": s.bytes,
                   "stale_after_seconds": snapshot.reclaim.stale_after} for s in snapshot.reclaim.stale],
        "roots": [{"path": r.path, "bytes": r.bytes, "apparent_bytes": r.apparent_bytes, "envs": r.envs,
                   "ignored_dirs": r.ignored_dirs, "filesystem_size_bytes": r.filesystem_size_bytes,
                   "filesystem_avail_bytes": r.filesystem_avail_bytes} for r in snapshot.roots],
        "scan_errors": len(snapshot.errors),
        "completed_at": snapshot.completed_at,
        "sort": sort,
    }
    return json.dumps(document, indent=2) + "\n"


def report_csv(snapshot: Snapshot, sort: str = DEFAULT_SORT) -> str:
    """The env list as CSV: a header row of the JSON env field names, then one row per env."""
    return env_csv(sort_rows(env_rows(snapshot), sort))


def match_envs(snapshot: Snapshot, given: Sequence[str]) -> list[EnvUsage]:
    """The envs ``given`` names: each an env name (it must match exactly one env) or a prefix."""
    chosen: dict[str, EnvUsage] = {}
    for item in given:
        path = os.path.realpath(item) if os.sep in item else None
        matches = [e for e in snapshot.envs if e.prefix == path] if path else []
        if not matches:
            matches = [e for e in snapshot.envs if e.name == item]
        if not matches:
            raise EnvNotFoundError(f"no env named or at {item!r}")
        if len(matches) > 1:
            where = ", ".join(sorted(e.prefix for e in matches))
            raise EnvNotFoundError(f"{item!r} names {len(matches)} envs ({where}): give a prefix instead")
        chosen[matches[0].prefix] = matches[0]
    return list(chosen.values())


def render_what_if(snapshot: Snapshot, envs: Sequence[EnvUsage], as_json: bool = False) -> str:
    """What deleting ``envs`` and then running ``conda clean --packages`` frees beyond that clean alone,
    and the package dirs the clean would then remove."""
    freed = reclaimable(CacheIndex(snapshot.pkgs, snapshot.envs, [usage for _, usage in snapshot.rest]), envs)
    package_bytes = sum(size for _, size in freed.packages)
    if as_json:
        return json.dumps({
            "freed_bytes": freed.bytes,
            "envs": [{"root": e.root, "name": e.name, "prefix": e.prefix} for e in envs],
            "unique_bytes": sum(e.usage.unique_bytes for e in envs),
            "packages_removed": len(freed.packages),
            "package_bytes": package_bytes,
            "package_dirs": [{"path": path, "bytes": size} for path, size in freed.packages],
        }, indent=2) + "\n"
    names = ", ".join(_printable(e.prefix) for e in envs)
    lines = [
        f"deleting {names} and then running 'conda clean --packages' frees {human_bytes(freed.bytes)} "
        f"({freed.bytes} bytes) beyond what that clean frees alone",
        f"  the envs' own files: {human_bytes(sum(e.usage.unique_bytes for e in envs))} at once",
        f"  package dirs clean would then remove: {len(freed.packages)}, {human_bytes(package_bytes)}",
    ]
    lines += [f"    {_printable(path)}  {human_bytes(size)}" for path, size in freed.packages]
    return "\n".join(lines) + "\n"
