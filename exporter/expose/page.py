"""The page at ``/``: the latest snapshot as one server-rendered HTML report, for people without Grafana.

Per root: true disk cost against the cost without hardlinks, the filesystem's free space, what ``conda
clean`` would free per package cache and kind, the stale envs and what deleting them frees. Then one row
per env (unique and shared bytes as a stacked bar on one scale for all envs), the owners, and the
exporter's own health. Every figure is the value of a ``/metrics`` series, shown in IEC units, with the
raw value in the element's ``data-value`` (what the table sorts by and the tests compare).

Rendered once per change of the store by :class:`PageCache` (the same :class:`RenderCache` as /metrics),
never per request: so the body holds nothing that moves with the clock. Times are printed as UTC dates
in ``<time>`` elements; the page's constant script (:mod:`exporter.expose.page_assets`) turns them into
"3 months ago" in the reader's browser, where they cannot go stale. Every name (env, prefix, root,
owner, cache) is shown as its ``/metrics`` label spells it, then HTML-escaped: text, never markup.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from html import escape

from exporter import __version__
from exporter.discover.roots import label_value
from exporter.expose.exposition import Body, RenderCache
from exporter.expose.page_assets import SCRIPT, STYLE
from exporter.expose.page_model import EnvRow, env_rows, human_bytes
from exporter.model import PkgsUsage, RootUsage, Snapshot
from exporter.scan import walk
from exporter.snapshot.store import ScanHealth, SnapshotStore

__all__ = ["PageCache", "render_page", "starting_page"]

def _head(title: str, extra: str = "") -> str:
    """The document up to ``<body>``: ``title`` is HTML already; ``extra`` goes into the head."""
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<link rel="icon" href="data:,">{extra}\n<title>{title}</title>\n'
            "<style>" + STYLE + "</style></head>\n<body>\n")


_BAR_WIDTH = 1000  # viewBox units of a bar; the SVG is stretched to its cell


def _name(text: str) -> str:
    """A name as its label spells it, as HTML text or attribute value."""
    return escape(label_value(text))


def _path(text: str) -> str:
    """A path as its label spells it, as HTML text that may break after each ``/``."""
    return "/<wbr>".join(escape(part) for part in label_value(text).split("/"))


def _count(value: int) -> str:
    return f"{value:,}"


def _num(value: float | None, shown: str, css: str = "num") -> str:
    """A number's table cell: the raw value to sort by and compare, and how it reads; ``css`` its class
    (the env table aligns by column instead, to keep a row short)."""
    attribute = f' class="{css}"' if css else ""
    if value is None:
        return f"<td{attribute}>&ndash;</td>"
    return f'<td{attribute} data-value="{value!r}">{shown}</td>'


def _bytes(value: int | None, css: str = "num") -> str:
    return _num(value, human_bytes(value) if value is not None else "", css)


def _time(timestamp: float | None) -> str:
    """A ``<time>``: the UTC date as text and on hover; the script reads ``datetime``."""
    if timestamp is None:
        return '<span class="muted">never</span>'
    moment = time.gmtime(timestamp)
    return (f'<time datetime="{time.strftime("%Y-%m-%dT%H:%M:%SZ", moment)}" '
            f'title="{time.strftime("%Y-%m-%d %H:%M:%S UTC", moment)}">{time.strftime("%Y-%m-%d %H:%M UTC", moment)}'
            "</time>")


def _figure(label: str, key: str, value: float, shown: str) -> str:
    return f'<dt>{label}</dt><dd data-key="{key}" data-value="{value!r}">{shown}</dd>'


def _bar(parts: Iterable[tuple[str, float]], scale: float, css: str, label: str) -> str:
    """A horizontal stacked bar: ``parts`` are (class, amount) on a scale where ``scale`` fills it."""
    rects, x = [], 0.0
    for cls, amount in parts:
        width = round(_BAR_WIDTH * amount / scale, 1) if scale > 0 else 0.0
        if width > 0:
            position = f' x="{x:g}"' if x else ""
            rects.append(f'<rect class="{cls}"{position} width="{width:g}" height="10"/>')
            x += width
    return (f'<svg class="{css}" viewBox="0 0 {_BAR_WIDTH} 10" preserveAspectRatio="none"><title>{label}</title>'
            f'{"".join(rects)}</svg>')


def _health(snapshot: Snapshot, health: ScanHealth) -> str:
    parts = []
    if health.loop_failed:
        parts.append(f'<p class="alert">The exporter stopped scanning ({escape(health.loop_failed)}): these '
                     "numbers are no longer updated.</p>")
    if not health.results_verified:
        parts.append('<p class="alert">These numbers were loaded from the state file; no scan has '
                     "confirmed them yet.</p>")
    result = "" if health.last_success else ' <span class="err">(the last scan failed; showing the one before)</span>'
    errors = sum(health.errors_total.values())
    error_kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(health.errors_total.items()) if n)
    last_scan = health.last_success_at or snapshot.completed_at
    mode = {"inotify": f"inotify, {_count(health.watches)} dirs", "poll": "polling"}.get(health.watch_mode, "off")
    items = [
        f'<div>Last scan <b data-key="last-scan" data-value="{last_scan!r}">{_time(last_scan)}</b>'
        f', took <b data-key="scan-duration" data-value="{health.last_duration_seconds!r}">'
        f"{health.last_duration_seconds:.2f} s</b>{result}</div>",
        f'<div>Watching <b data-key="watch-mode">{mode}</b></div>',
        f'<div>Envs <b data-key="envs" data-value="{len(snapshot.envs)}">{_count(len(snapshot.envs))}</b></div>',
        f'<div>Unreadable paths <b data-key="scan-errors" data-value="{errors}"'
        f'{" class=err" if errors else ""}>{_count(errors)}</b>{f" ({error_kinds})" if error_kinds else ""}'
        " since start</div>",
    ]
    return "".join(parts) + f'<section class="health">{"".join(items)}</section>\n'


def _cache_table(caches: list[PkgsUsage]) -> str:
    heads = ("Package cache", "Size", "Packages", "clean -p", "clean -t", "clean -i", "Leftovers")
    rows = "".join(
        f'<tr data-pkgs="{_name(c.path)}"><td class="path">{_path(c.path)}</td>{_bytes(c.bytes)}'
        f"{_num(c.packages, _count(c.packages))}{_bytes(c.unreferenced_bytes)}{_bytes(c.tarball_bytes)}"
        f"{_bytes(c.index_cache_bytes)}{_bytes(c.leftover_bytes)}</tr>"
        for c in caches
    )
    head = "".join(f'<th{" class=num" if i else ""}>{h}</th>' for i, h in enumerate(heads))
    return (f'<div class="scroll"><table class="caches"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>'
            '</table></div><p class="legend">What <code>conda clean</code> frees: -p (<code>--packages</code>) '
            "packages no env uses, -t tarballs, -i the index cache; leftovers: unfinished extractions and "
            "downloads.</p>")


def _root_card(root: RootUsage, snapshot: Snapshot) -> str:
    stale = next((s for s in snapshot.reclaim.stale if s.root == root.path), None)
    used = root.filesystem_size_bytes - root.filesystem_avail_bytes
    fs_label = (f"this root {human_bytes(root.bytes)}, other files {human_bytes(max(used - root.bytes, 0))}, "
                f"free {human_bytes(root.filesystem_avail_bytes)}")
    figures = [
        _figure("On disk (each file once)", "root-bytes", root.bytes, human_bytes(root.bytes)),
        _figure("Without hardlinks", "root-apparent", root.apparent_bytes, human_bytes(root.apparent_bytes)),
        _figure("Saved by hardlinks", "root-saved", root.apparent_bytes - root.bytes,
                human_bytes(root.apparent_bytes - root.bytes)),
        _figure("Envs", "root-envs", root.envs, _count(root.envs)),
        _figure("Filesystem free", "fs-avail", root.filesystem_avail_bytes, human_bytes(root.filesystem_avail_bytes)),
        _figure("Filesystem size", "fs-size", root.filesystem_size_bytes, human_bytes(root.filesystem_size_bytes)),
    ]
    if stale is not None:
        days = snapshot.reclaim.stale_after / 86400
        figures += [
            _figure(f"Stale envs (idle over {days:g} days)", "stale-envs", stale.envs, _count(stale.envs)),
            _figure("Deleting them and cleaning frees", "stale-reclaimable", stale.bytes, human_bytes(stale.bytes)),
        ]
    bar = _bar((("r", min(root.bytes, used)), ("o", max(used - root.bytes, 0)), ("f", root.filesystem_avail_bytes)),
               root.filesystem_size_bytes, "fs", fs_label)
    caches = [c for c in snapshot.pkgs if c.root == root.path]
    return (f'<article class="card" data-root="{_name(root.path)}"><h3>{_path(root.path)}</h3><div class="rootgrid">'
            f'<div><dl class="figs">{"".join(figures)}</dl>{bar}'
            f'<div class="legend"><span class="key r"></span>this root<span class="key o"></span>other files'
            f'<span class="key f"></span>free</div></div><div>{_cache_table(caches) if caches else ""}</div></div>'
            "</article>")


ENV_COLUMNS = (
    # (data-key = the report's --sort key, heading, "num" or "text")
    ("name", "Env and prefix", "text"), ("owner", "Owner", "text"), ("disk", "Unique + shared", "num"),
    ("unique", "Unique", "num"), ("shared", "Shared", "num"), ("reclaimable", "Reclaimable", "num"),
    ("apparent", "Apparent", "num"), ("packages", "Packages", "num"), ("untracked", "Untracked", "num"),
    ("copied", "Copied", "num"), ("last-transaction", "Last transaction", "num"), ("errors", "Errors", "num"),
)


def _env_row(row: EnvRow, scale: int) -> str:
    bar = _bar((("u", row.unique_bytes), ("s", row.shared_bytes)), scale, "bar",
               f"unique {human_bytes(row.unique_bytes)}, shared {human_bytes(row.shared_bytes)}")
    errors = _num(row.scan_errors, _count(row.scan_errors), "err" if row.scan_errors else "muted")
    last = row.last_transaction
    when = f'<td data-value="{last!r}">{_time(last)}</td>' if last is not None else '<td class="muted">never</td>'
    return (
        f'<tr><td class="name"><b>{_name(row.name)}</b><span class="path">{_path(row.prefix)}</span></td>'
        f'<td>{_name(row.owner)}</td><td data-value="{row.disk_bytes}">{bar}</td>{_bytes(row.unique_bytes, "")}'
        f'{_bytes(row.shared_bytes, "")}{_bytes(row.reclaimable_bytes, "")}{_bytes(row.apparent_bytes, "")}'
        f'{_num(row.packages, _count(row.packages), "")}{_bytes(row.untracked_bytes, "")}'
        f'{_bytes(row.copied_bytes, "")}{when}{errors}</tr>\n'
    )


def _env_table(rows: list[EnvRow]) -> str:
    scale = max((row.disk_bytes for row in rows), default=0)
    head = "".join(
        f'<th data-key="{key}" data-sort="{kind}"'
        f'{" aria-sort=descending" if key == "unique" else ""}>{title}</th>'
        for key, title, kind in ENV_COLUMNS
    )
    return (
        '<div class="legend"><span class="key u"></span>unique: freed by deleting the env'
        '<span class="key s"></span>shared: hardlinked with the package cache or other envs</div>'
        f'<div class="scroll"><table id="envs" data-sortable><thead><tr>{head}</tr></thead>\n<tbody>\n'
        f'{"".join(_env_row(row, scale) for row in rows)}</tbody></table></div>\n'
    )


def _owner_table(snapshot: Snapshot) -> str:
    owners = sorted(snapshot.reclaim.owners, key=lambda o: (-o.bytes, o.root, o.owner))
    rows = "".join(
        f'<tr><td>{_name(o.owner)}</td>{_num(o.envs, _count(o.envs))}{_bytes(o.bytes)}'
        f'<td class="path">{_name(o.root)}</td></tr>'
        for o in owners
    )
    head = ('<th data-key="owner" data-sort="text">Owner</th><th data-key="owner-envs" data-sort="num" class="num">'
            'Envs</th><th data-key="owner-reclaimable" data-sort="num" class="num" aria-sort="descending">'
            'Reclaimable</th><th data-key="root" data-sort="text">Root</th>')
    return (f'<div class="scroll"><table id="owners" data-sortable><thead><tr>{head}</tr></thead><tbody>{rows}'
            "</tbody></table></div>\n")


def render_page(snapshot: Snapshot, health: ScanHealth, telemetry_path: str, host: str) -> str:
    """The whole page for ``snapshot`` and the exporter's ``health``; ``host`` names the machine."""
    roots = {r.path for r in snapshot.roots}
    loose = [c for c in snapshot.pkgs if c.root not in roots]
    rows = env_rows(snapshot)
    cards = "".join(_root_card(root, snapshot) for root in snapshot.roots)
    if loose:
        cards += f'<article class="card"><h3>Other package caches</h3>{_cache_table(loose)}</article>'
    metrics = escape(telemetry_path)
    return (
        _head(f"Conda disk usage on {escape(host)}")
        + f'<header><h1>Conda disk usage <span>on {escape(host)}</span></h1><nav><a href="{metrics}">{metrics}</a>'
        '<a href="/healthz">/healthz</a><a href="/readyz">/readyz</a></nav></header>\n<main>\n'
        + _health(snapshot, health)
        + (f'<h2>Roots <span>({len(snapshot.roots)})</span></h2>\n<div class="cards">{cards}</div>\n' if cards else "")
        + f'<h2>Environments <span>({len(rows)}; click a heading to sort)</span></h2>\n{_env_table(rows)}'
        + '<h2>Owners <span>(what deleting all their envs and cleaning frees)</span></h2>\n'
        + _owner_table(snapshot)
        + f"</main>\n<footer>conda-env-exporter {escape(__version__)} &middot; walker {walk.WALKER} &middot; "
        f"scan completed {_time(snapshot.completed_at)}</footer>\n<script>{SCRIPT}</script>\n</body></html>\n"
    )


def starting_page() -> bytes:
    """What ``/`` answers (with 503) until the first scan has finished: no numbers, and a reload every 5 s."""
    return (
        _head("Conda disk usage: first scan running", '\n<meta http-equiv="refresh" content="5">')
        + '<header><h1>Conda disk usage</h1></header>\n<main><h2>First scan running</h2>'
        "<p>The exporter has not finished its first scan yet, so it has no "
        "numbers to show. This page reloads every 5 seconds; <a href=\"/readyz\">/readyz</a> answers 200 once "
        "the scan is done.</p></main>\n</body></html>\n"
    ).encode()


class PageCache(RenderCache):
    """The page, rendered (and gzipped when asked) once per change of the store."""

    def __init__(self, store: SnapshotStore, telemetry_path: str, host: str) -> None:
        super().__init__(store)
        self._telemetry_path = telemetry_path
        self._host = host

    def _render(self, version: int) -> Body:
        snapshot = self._store.snapshot
        if snapshot is None:  # callers check first; kept total so a render never fails
            return Body(version, starting_page())
        page = render_page(snapshot, self._store.health(), self._telemetry_path, self._host)
        return Body(version, page.encode("utf-8", "backslashreplace"))
