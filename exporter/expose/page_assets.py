"""The page's constant inline stylesheet and script, and the Content-Security-Policy that admits exactly them.

Both are constants, so their hashes are computed once at import and the policy is the same for every
body the page cache serves: no nonce (a nonce would have to change per response, and the body is
rendered once per snapshot change and then reused). The policy forbids everything else: no other
script, inline or not, no inline event handler, no ``style`` attribute, no fetch, no frame, no form.
Bars are SVG ``rect`` elements sized by their ``width`` attribute, which no style policy governs.

The script is a progressive enhancement: without it the page reads the same, with dates printed in
UTC and the env table in the server's order (biggest unique bytes first).
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["CONTENT_SECURITY_POLICY", "SCRIPT", "STYLE"]

STYLE = """
:root{--fg:#1f2733;--muted:#5c6878;--line:#e1e6ec;--bg:#f4f6f9;--card:#fff;--head:#f8fafc;--unique:#d9534f;
--shared:#9db4cc;--root:#3f6fb5;--used:#c7d2de;--free:#e9eef3;--link:#1d5fbf;--warn:#b42318;--warnbg:#fdecea}
@media (prefers-color-scheme:dark){:root{--fg:#e3e8ef;--muted:#98a4b3;--line:#2d3540;--bg:#12161b;--card:#1a1f26;
--head:#20262e;--unique:#f07b72;--shared:#5b7390;--root:#6c9be0;--used:#3a4552;--free:#252c35;--link:#7fb0f0;
--warn:#ff8a80;--warnbg:#3b1e1d}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",sans-serif;
color:var(--fg);background:var(--bg)}
a{color:var(--link)}
header{display:flex;flex-wrap:wrap;align-items:baseline;justify-content:space-between;gap:.25rem 1.5rem;
padding:.9rem 1.5rem;background:var(--card);border-bottom:1px solid var(--line)}
h1{font-size:1.2rem;margin:0}
h1 span{font-weight:400;color:var(--muted)}
nav{display:flex;gap:1rem}
main{padding:.5rem 1.5rem 2rem;max-width:1500px;margin:0 auto}
h2{font-size:1rem;margin:1.4rem 0 .6rem}
h2 span{font-weight:400;color:var(--muted)}
.health{display:flex;flex-wrap:wrap;gap:.3rem 2rem;margin:.9rem 0 0;padding:.6rem 1rem;background:var(--card);
border:1px solid var(--line);border-radius:8px}
.health div{white-space:nowrap}
.health b{font-weight:600}
.alert{margin:.9rem 0 0;padding:.6rem 1rem;border-radius:8px;background:var(--warnbg);color:var(--warn);
font-weight:600}
.cards{display:grid;gap:1rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.8rem 1rem;min-width:0}
.card h3{margin:0 0 .6rem;font-size:.95rem;overflow-wrap:anywhere}
.rootgrid{display:grid;grid-template-columns:minmax(0,360px) minmax(0,1fr);gap:.5rem 2rem;align-items:start}
@media (max-width:900px){.rootgrid{grid-template-columns:minmax(0,1fr)}}
.figs{display:grid;grid-template-columns:1fr auto;gap:.15rem 1rem;margin:0 0 .6rem}
.figs dt{color:var(--muted)}
.figs dd{margin:0;text-align:right;font-variant-numeric:tabular-nums;font-weight:600}
.scroll{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:8px}
.card .scroll{border-radius:6px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:.38rem .5rem;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap;vertical-align:top}
tbody tr:last-child td{border-bottom:0}
tbody tr:hover{background:var(--head)}
th{background:var(--head);color:var(--muted);font-size:.75rem;font-weight:600;text-transform:uppercase;
letter-spacing:.03em;vertical-align:bottom}
#envs th{white-space:normal}
th[data-sort]{cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:.7em}
th[aria-sort=descending]::after{content:" \\25BC";font-size:.7em}
.num{text-align:right}
.name{white-space:normal;min-width:12rem;max-width:28rem}
.name b{font-weight:600;white-space:pre-wrap;overflow-wrap:anywhere}
.path{display:block;color:var(--muted);white-space:pre-wrap;overflow-wrap:break-word;font-size:.8em}
td.path{display:table-cell;min-width:10rem}
.muted{color:var(--muted)}
.err{color:var(--warn);font-weight:700}
#envs td:nth-child(3){width:12%;min-width:7rem}
#envs td:nth-child(n+4),#envs th:nth-child(n+4){text-align:right}
svg.bar{display:block;width:100%;height:10px;margin-top:.3rem}
svg.fs{display:block;width:100%;height:12px;margin:.1rem 0 .7rem;border-radius:3px}
.u{fill:var(--unique)}.s{fill:var(--shared)}.r{fill:var(--root)}.o{fill:var(--used)}.f{fill:var(--free)}
.key{display:inline-block;width:.7rem;height:.7rem;border-radius:2px;margin:0 .3rem 0 .8rem;vertical-align:-1px}
.key.u{background:var(--unique)}.key.s{background:var(--shared)}.key.r{background:var(--root)}
.key.o{background:var(--used)}.key.f{background:var(--free);outline:1px solid var(--line)}
.legend{color:var(--muted);font-size:.85rem;margin:.4rem 0 .5rem}
.legend .key:first-child{margin-left:0}
footer{color:var(--muted);font-size:.8rem;padding:0 1.5rem 1.5rem;max-width:1500px;margin:0 auto}
@media (max-width:640px){header,main,footer{padding-left:.75rem;padding-right:.75rem}
.health{gap:.2rem 1rem}.health div{white-space:normal}th,td{padding:.32rem .45rem}
.name{min-width:9rem;max-width:10rem}
#envs th:first-child,#envs td:first-child{position:sticky;left:0;z-index:1;background:var(--card);
box-shadow:1px 0 0 var(--line)}#envs th:first-child{background:var(--head)}}
"""

SCRIPT = """
"use strict";
(function () {
  var steps = [[31536000, "year"], [2592000, "month"], [604800, "week"], [86400, "day"], [3600, "hour"],
               [60, "minute"], [1, "second"]];
  var words = new Intl.RelativeTimeFormat("en", {numeric: "auto"});
  var now = Date.now() / 1000;
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var delta = Date.parse(el.getAttribute("datetime")) / 1000 - now;
    for (var i = 0; i < steps.length; i++) {
      if (Math.abs(delta) >= steps[i][0] || i === steps.length - 1) {
        el.textContent = words.format(Math.round(delta / steps[i][0]), steps[i][1]);
        break;
      }
    }
  });
  function value(cell) {
    var v = parseFloat(cell.getAttribute("data-value"));
    return isNaN(v) ? -Infinity : v;
  }
  document.querySelectorAll("table[data-sortable]").forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, column) {
      var kind = th.getAttribute("data-sort");
      if (!kind) return;
      th.tabIndex = 0;
      function sort() {
        var state = th.getAttribute("aria-sort");
        var descending = state ? state === "ascending" : kind === "num";
        var rows = Array.prototype.slice.call(table.tBodies[0].rows);
        rows.sort(function (a, b) {
          var x = a.cells[column], y = b.cells[column], order;
          if (kind === "num") {
            order = value(x) < value(y) ? -1 : value(x) > value(y) ? 1 : 0;
          } else {
            order = (x.firstElementChild || x).textContent.localeCompare((y.firstElementChild || y).textContent);
          }
          return descending ? -order : order;
        });
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        rows.forEach(function (row) { table.tBodies[0].appendChild(row); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sort(); }
      });
    });
  });
  document.documentElement.setAttribute("data-script", "ran");
})();
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src {_sha256(STYLE)}; script-src {_sha256(SCRIPT)}; img-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The page's policy: its own style and script by hash, ``data:`` images (the empty favicon), nothing else."""
