"""``conda-env-exporter report``: a hardlink-aware ``du`` for conda, as a table for people."""

from __future__ import annotations

from exporter.model import Snapshot

__all__ = ["human_bytes", "render_report"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


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


def render_report(snapshot: Snapshot) -> str:
    """Envs sorted by unique bytes (what deleting them frees), then package caches and root totals."""
    rows = [("ENV", "UNIQUE", "SHARED", "APPARENT", "FILES", "HARDLINKED", "PREFIX")]
    for env in sorted(snapshot.envs, key=lambda e: (-e.usage.unique_bytes, e.prefix)):
        u = env.usage
        share = f"{100 * u.hardlinked_files / u.files:.0f}%" if u.files else "-"
        rows.append(
            (
                _printable(env.name),
                human_bytes(u.unique_bytes),
                human_bytes(u.shared_bytes),
                human_bytes(u.apparent_bytes),
                str(u.files),
                share,
                _printable(env.prefix),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.append("")
    for cache in snapshot.pkgs:
        lines.append(
            f"package cache {_printable(cache.path)}: {human_bytes(cache.bytes)} in {cache.packages} packages; "
            f"reclaimable: {human_bytes(cache.unreferenced_bytes)} in {cache.unreferenced_packages} unused "
            f"packages (conda clean -p), {human_bytes(cache.tarball_bytes)} in {cache.tarballs} tarballs "
            f"(conda clean -t)"
        )
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
