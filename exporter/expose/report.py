"""``conda-env-exporter report``: a hardlink-aware ``du`` for conda, for people (a table) and scripts (JSON).

``report --what-if-delete ENV ...`` tells what deleting those envs and then running ``conda clean
--packages`` would free, and which package dirs that clean would then remove.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from exporter.account.reclaim import CacheIndex, reclaimable
from exporter.model import EnvUsage, Snapshot

__all__ = ["EnvNotFoundError", "human_bytes", "match_envs", "render_report", "render_what_if", "report_json"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


class EnvNotFoundError(ValueError):
    """A name or prefix given to ``--what-if-delete`` matches no env, or a name matches several."""


def human_bytes(value: float) -> str:
    """``1536`` -> ``1.5 KiB`` (IEC units)."""
    size = float(value)
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _printable(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def render_report(snapshot: Snapshot) -> str:
    """Envs sorted by unique bytes (what deleting them frees at once), with what deleting each and
    cleaning the cache frees; then package caches, owners, stale envs and root totals."""
    reclaim = snapshot.reclaim.by_prefix
    header = ("ENV", "UNIQUE", "RECLAIMABLE", "SHARED", "APPARENT", "FILES", "HARDLINKED", "OWNER", "PREFIX")
    rows: list[tuple[str, ...]] = [header]
    for env in sorted(snapshot.envs, key=lambda e: (-e.usage.unique_bytes, e.prefix)):
        u = env.usage
        share = f"{100 * u.hardlinked_files / u.files:.0f}%" if u.files else "-"
        rows.append((
            _printable(env.name), human_bytes(u.unique_bytes), human_bytes(reclaim.get(env.prefix, 0)),
            human_bytes(u.shared_bytes), human_bytes(u.apparent_bytes), str(u.files), share,
            _printable(env.contents.owner), _printable(env.prefix),
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


def _env_json(env: EnvUsage, reclaim: dict[str, int]) -> dict[str, Any]:
    u = env.usage
    return {
        "root": env.root, "name": env.name, "prefix": env.prefix, "owner": env.contents.owner,
        "unique_bytes": u.unique_bytes, "shared_bytes": u.shared_bytes, "apparent_bytes": u.apparent_bytes,
        "reclaimable_bytes": reclaim.get(env.prefix, 0), "files": u.files, "hardlinked_files": u.hardlinked_files,
        "packages": env.contents.packages, "untracked_bytes": env.contents.untracked_bytes,
        "copied_bytes": env.contents.copied_bytes, "last_transaction": env.contents.last_transaction,
        "scan_errors": len(u.errors),
    }


def report_json(snapshot: Snapshot) -> str:
    """The report as one JSON object: ``envs``, ``caches``, ``owners``, ``stale``, ``roots``; bytes are
    allocated bytes, times Unix seconds. Path names that are not UTF-8 keep their bytes as ``\\udcXX``
    surrogates escaped by JSON."""
    reclaim = snapshot.reclaim.by_prefix
    document = {
        "envs": [_env_json(e, reclaim) for e in sorted(snapshot.envs, key=lambda e: (-e.usage.unique_bytes, e.prefix))],
        "caches": [{"root": c.root, "path": c.path, "bytes": c.bytes, "packages": c.packages,
                    "unreferenced_packages": c.unreferenced_packages, "unreferenced_bytes": c.unreferenced_bytes,
                    "tarballs": c.tarballs, "tarball_bytes": c.tarball_bytes} for c in snapshot.pkgs],
        "owners": [{"root": o.root, "owner": o.owner, "envs": o.envs, "reclaimable_bytes": o.bytes}
                   for o in snapshot.reclaim.owners],
        "stale": [{"root": s.root, "envs": s.envs, "reclaimable_bytes": s.bytes,
                   "stale_after_seconds": snapshot.reclaim.stale_after} for s in snapshot.reclaim.stale],
        "roots": [{"path": r.path, "bytes": r.bytes, "apparent_bytes": r.apparent_bytes, "envs": r.envs}
                  for r in snapshot.roots],
        "scan_errors": len(snapshot.errors),
    }
    return json.dumps(document, indent=2) + "\n"


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
    freed = reclaimable(CacheIndex(snapshot.pkgs), envs)
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
