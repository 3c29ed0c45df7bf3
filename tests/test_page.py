"""The page ``/`` in a real browser (Debian's headless Chromium) against a real exporter process over real HTTP:
every number it shows is the value of its /metrics series, rows sort by a click, hostile names stay text,
and its Content-Security-Policy admits no script but its own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.common.by import By

from exporter.demo import build_demo_root
from tests import browser
from tests.exposition import Sample, samples
from tests.httpwait import fetch, free_port, poll, wait_ready
from tests.oracle import du_bytes

pytestmark = pytest.mark.skipif(bool(browser.missing()), reason=f"browser tests: {browser.missing()}")

# The page's env columns (th data-key) and the series each shows; "disk" is unique + shared.
ENV_SERIES = {
    "unique": "conda_env_unique_bytes", "shared": "conda_env_shared_bytes",
    "reclaimable": "conda_env_reclaimable_bytes", "apparent": "conda_env_apparent_bytes",
    "packages": "conda_env_packages", "untracked": "conda_env_untracked_bytes", "copied": "conda_env_copied_bytes",
    "last-transaction": "conda_env_last_transaction_timestamp_seconds", "errors": "conda_env_scan_errors",
}
ROOT_SERIES = {
    "root-bytes": "conda_root_bytes", "root-apparent": "conda_root_apparent_bytes", "root-envs": "conda_root_envs",
    "fs-avail": "conda_root_filesystem_avail_bytes", "fs-size": "conda_root_filesystem_size_bytes",
    "stale-envs": "conda_root_stale_envs", "stale-reclaimable": "conda_root_stale_reclaimable_bytes",
}
CACHE_SERIES = ("conda_pkgs_bytes", "conda_pkgs_packages", "conda_pkgs_unreferenced_bytes", "conda_pkgs_tarball_bytes",
                "conda_pkgs_index_cache_bytes", "conda_pkgs_leftover_bytes")  # the cache table's columns after the path
COUNTS = {"packages", "root-envs", "stale-envs", "errors", "envs", "scan-errors", "conda_pkgs_packages", "owner-envs"}

# What the page holds, read from its DOM in the browser (data-value: the raw number; text: what it reads).
READ_PAGE = """
function cell(td) {
  var time = td.querySelector("time");
  return {value: td.getAttribute("data-value"), text: td.textContent,
          datetime: time && time.getAttribute("datetime"), title: time && time.title};
}
var keys = Array.from(document.querySelectorAll("#envs thead th")).map(function (th) { return th.dataset.key; });
var page = {envs: [], roots: [], caches: [], owners: [], health: {}, script: document.documentElement.dataset.script};
document.querySelectorAll("#envs tbody tr").forEach(function (tr) {
  var row = {name: tr.cells[0].querySelector("b").textContent, prefix: tr.cells[0].querySelector(".path").textContent,
             owner: tr.cells[1].textContent, cells: {}};
  Array.from(tr.cells).forEach(function (td, i) { row.cells[keys[i]] = cell(td); });
  page.envs.push(row);
});
document.querySelectorAll("article[data-root]").forEach(function (card) {
  var figures = {};
  card.querySelectorAll("dd[data-key]").forEach(function (dd) { figures[dd.dataset.key] = cell(dd); });
  page.roots.push({root: card.dataset.root, figures: figures});
  card.querySelectorAll("tr[data-pkgs]").forEach(function (tr) {
    page.caches.push({root: card.dataset.root, path: tr.cells[0].textContent,
                      cells: Array.from(tr.cells).slice(1).map(cell)});
  });
});
document.querySelectorAll("#owners tbody tr").forEach(function (tr) {
  page.owners.push({owner: tr.cells[0].textContent, envs: cell(tr.cells[1]), bytes: cell(tr.cells[2]),
                    root: tr.cells[3].textContent});
});
document.querySelectorAll(".health [data-key]").forEach(function (b) { page.health[b.dataset.key] = cell(b); });
return JSON.stringify(page);
"""


def iec(value: float) -> str:
    """Bytes as the dashboards show them (IEC units, one decimal from KiB on), written out here independently."""
    units, size, step = ("B", "KiB", "MiB", "GiB", "TiB", "PiB"), float(value), 0
    while abs(size) >= 1024 and step < len(units) - 1:
        size, step = size / 1024, step + 1
    return f"{size:.0f} B" if step == 0 else f"{size:.1f} {units[step]}"


def shown(key: str, value: float) -> str:
    return f"{int(value):,}" if key in COUNTS else iec(value)


def one(series: Sample, **labels: str) -> float:
    """The value of the one sample whose labels include ``labels``."""
    found = [v for k, v in series.items() if labels.items() <= dict(k).items()]
    assert len(found) == 1, (labels, series)
    return found[0]


class Exporter:
    """``conda-env-exporter`` serving ``root`` on a free port, as a real process."""

    def __init__(self, exporter_cmd: list[str], root: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [*exporter_cmd, "--root", str(root), "--web.listen-address", f"127.0.0.1:{self.port}",
             "--scan.workers", "1"], stdout=self._log, stderr=subprocess.STDOUT, text=True)
        wait_ready(self.proc, self.port)

    def metrics(self) -> dict[str, Sample]:
        status, body = fetch(self.url + "/metrics")
        assert status == 200
        return samples(body)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    with browser.chromium() as running:
        yield running


@pytest.fixture(scope="module")
def served(exporter_cmd: list[str], fixture_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    exporter = Exporter(exporter_cmd, fixture_root, tmp_path_factory.mktemp("page") / "exporter.log")
    yield exporter
    exporter.stop()


def load(driver: WebDriver, exporter: Exporter) -> tuple[dict[str, Any], dict[str, Sample]]:
    """The page as the browser shows it and /metrics of the same scan (fetched before and after the page; a
    scan finishing in between makes it try again)."""
    def consistent() -> tuple[dict[str, Any], dict[str, Sample]] | None:
        before = exporter.metrics()
        driver.get(exporter.url + "/")
        page: dict[str, Any] = json.loads(driver.execute_script(READ_PAGE))
        after = exporter.metrics()
        keep = ("conda_exporter_last_scan_success_timestamp_seconds", "conda_exporter_scans_total")
        return (page, before) if all(before[k] == after[k] for k in keep) else None

    return poll(consistent, 60, "a page and /metrics of one scan")


def test_every_number_on_the_page_is_its_metric(driver: WebDriver, served: Exporter, fixture_root: Path) -> None:
    page, metrics = load(driver, served)
    assert browser.console(driver) == []  # no console error, no CSP violation, no failed request
    assert page["script"] == "ran"  # the page's own script ran under its CSP

    labels = {(dict(k)["env"], dict(k)["prefix"]) for k in metrics["conda_env_unique_bytes"]}
    assert sorted((row["name"], row["prefix"]) for row in page["envs"]) == sorted(labels)  # one row per env, no more
    for row in page["envs"]:
        env = {"env": row["name"], "prefix": row["prefix"]}
        info = next(dict(k) for k in metrics["conda_env_info"] if env.items() <= dict(k).items())
        assert row["owner"] == info["owner"]
        for key, name in ENV_SERIES.items():
            value, cell = one(metrics[name], **env), row["cells"][key]
            assert float(cell["value"]) == value, (row["name"], key)
            if key == "last-transaction":  # a date in UTC, written by the server; the script made it relative
                moment = time.gmtime(value)
                assert cell["datetime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", moment)
                assert cell["title"] == time.strftime("%Y-%m-%d %H:%M:%S UTC", moment)
                assert re.fullmatch(r"(\d+ \w+ ago|now|yesterday|last \w+)", cell["text"]), cell["text"]
            else:
                assert cell["text"] == shown(key, value), (row["name"], key)
        disk = one(metrics["conda_env_unique_bytes"], **env) + one(metrics["conda_env_shared_bytes"], **env)
        assert float(row["cells"]["disk"]["value"]) == disk

    assert [r["root"] for r in page["roots"]] == [dict(k)["root"] for k in metrics["conda_root_bytes"]]
    for card in page["roots"]:
        for key, name in ROOT_SERIES.items():
            value = one(metrics[name], root=card["root"])
            assert float(card["figures"][key]["value"]) == value and card["figures"][key]["text"] == shown(key, value)
        saved = one(metrics["conda_root_apparent_bytes"], root=card["root"]) - one(metrics["conda_root_bytes"],
                                                                                   root=card["root"])
        assert float(card["figures"]["root-saved"]["value"]) == saved
    assert float(page["roots"][0]["figures"]["root-bytes"]["value"]) == du_bytes(fixture_root)  # and du agrees

    assert len(page["caches"]) == len(metrics["conda_pkgs_bytes"]) > 0
    for cache in page["caches"]:
        for name, cell in zip(CACHE_SERIES, cache["cells"], strict=True):
            value = one(metrics[name], root=cache["root"], pkgs_dir=cache["path"])
            assert float(cell["value"]) == value and cell["text"] == shown(name, value), name

    assert len(page["owners"]) == len(metrics["conda_owner_envs"]) > 0
    for owner in page["owners"]:
        where = {"root": owner["root"], "owner": owner["owner"]}
        assert float(owner["envs"]["value"]) == one(metrics["conda_owner_envs"], **where)
        assert float(owner["bytes"]["value"]) == one(metrics["conda_owner_reclaimable_bytes"], **where)
        assert owner["bytes"]["text"] == iec(one(metrics["conda_owner_reclaimable_bytes"], **where))

    health = page["health"]
    assert float(health["last-scan"]["value"]) == one(metrics["conda_exporter_last_scan_success_timestamp_seconds"])
    assert float(health["scan-duration"]["value"]) == one(metrics["conda_exporter_last_scan_duration_seconds"])
    assert float(health["envs"]["value"]) == one(metrics["conda_exporter_envs"]) == len(page["envs"])
    assert float(health["scan-errors"]["value"]) == sum(metrics["conda_exporter_scan_errors_total"].values())


def column_values(driver: WebDriver, key: str) -> list[tuple[str, float]]:
    """(env name, the column's raw value) of each row, in the order shown."""
    found: list[list[Any]] = driver.execute_script(
        "var key = arguments[0];"
        "var i = Array.from(document.querySelectorAll('#envs thead th')).findIndex(function (th) {"
        " return th.dataset.key === key; });"
        "return Array.from(document.querySelectorAll('#envs tbody tr')).map(function (tr) {"
        " return [tr.cells[0].querySelector('b').textContent, tr.cells[i].getAttribute('data-value')]; });", key)
    return [(name, float(value) if value is not None else float("-inf")) for name, value in found]


def test_a_click_on_a_heading_sorts_the_rows(driver: WebDriver, served: Exporter) -> None:
    page, metrics = load(driver, served)
    unique = {row["name"]: one(metrics["conda_env_unique_bytes"], env=row["name"], prefix=row["prefix"])
              for row in page["envs"]}
    assert [v for _, v in column_values(driver, "unique")] == sorted(unique.values(), reverse=True)  # server order
    # the column the server sorted by flips on a click
    driver.find_element(By.CSS_SELECTOR, '#envs th[data-key="unique"]').click()
    assert [v for _, v in column_values(driver, "unique")] == sorted(unique.values())
    for key in ("reclaimable", "apparent", "last-transaction"):
        heading = driver.find_element(By.CSS_SELECTOR, f'#envs th[data-key="{key}"]')
        heading.click()  # another number column: biggest first, then smallest first
        descending = column_values(driver, key)
        assert heading.get_attribute("aria-sort") == "descending"
        heading.click()
        ascending = column_values(driver, key)
        assert heading.get_attribute("aria-sort") == "ascending"
        assert [v for _, v in descending] == sorted((v for _, v in descending), reverse=True), key
        assert [v for _, v in ascending] == sorted(v for _, v in descending), key
        assert sorted(descending) == sorted(ascending) and len(descending) == len(unique)  # same rows, moved
    # the cells moved with their rows: each name still has its own numbers
    assert {name: value for name, value in column_values(driver, "unique")} == unique
    driver.find_element(By.CSS_SELECTOR, '#envs th[data-key="name"]').click()
    names = [name for name, _ in column_values(driver, "unique")]
    assert names == sorted(names, key=str.casefold)  # plain ASCII names: the browser's collation agrees


def test_screenshot_of_the_page_is_a_picture(driver: WebDriver, served: Exporter) -> None:
    driver.get(served.url + "/")
    png = driver.get_screenshot_as_png()
    width, height, colours = browser.png_size_and_colours(png)
    assert (width, height) == tuple(driver.execute_script("return [window.innerWidth, window.innerHeight]"))
    assert len(png) > 20_000 and colours > 100, (len(png), colours)  # text, bars and tables, not a blank page


def test_readable_at_1280_and_on_a_phone(driver: WebDriver, served: Exporter) -> None:
    """At 1280 px the env table fits; on a 400 px phone the page itself never scrolls sideways, only the
    table inside its own container does."""
    try:
        for width, table_fits in ((1280, True), (400, False)):
            driver.set_window_size(width, 900)
            driver.get(served.url + "/")
            page_width, viewport, table, box = driver.execute_script(
                "var box = document.querySelector('#envs').parentNode;"
                "return [document.documentElement.scrollWidth, document.documentElement.clientWidth,"
                " box.scrollWidth, box.clientWidth];")
            assert page_width <= viewport, (width, page_width, viewport)
            assert (table <= box) is table_fits, (width, table, box)
            assert driver.execute_script("return getComputedStyle(arguments[0]).overflowX",
                                         driver.find_element(By.CSS_SELECTOR, "#envs")
                                         .find_element(By.XPATH, "..")) == "auto"
    finally:
        driver.set_window_size(1280, 900)


def test_without_javascript_the_page_reads_the_same(served: Exporter) -> None:
    """No script: dates stay absolute UTC dates, rows stay in the server's order (biggest unique first)."""
    with browser.chromium(javascript=False) as plain:
        plain.get(served.url + "/")
        assert plain.execute_script("return document.documentElement.dataset.script") is None  # it did not run
        dates = [e.text for e in plain.find_elements(By.CSS_SELECTOR, "#envs time")]
        assert dates and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", d) for d in dates), dates
        unique = [float(v) for v in plain.execute_script(
            "return Array.from(document.querySelectorAll('#envs tbody tr')).map(function (tr) {"
            " return tr.cells[3].getAttribute('data-value'); })")]
        assert unique == sorted(unique, reverse=True) and len(unique) >= 4


HOSTILE_NAMES = [
    b"<img src=x onerror=alert(1)>", b'"><img src=x onerror=window.pwned=1>', b"<svg onload=window.pwned=2>",
    b"it's \"quoted\" & <b>bold<b>", b"new\nline", b"latin1-\xe9\xff<script>window.pwned=3<",
]


@pytest.fixture(scope="module")
def hostile(exporter_cmd: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    """The demo root under a directory path that spells a script element, plus envs with hostile names."""
    base = tmp_path_factory.mktemp("hostile")
    root = build_demo_root(base / "<script>window.pwned=4;alert(4)</script>" / "conda")
    for raw in HOSTILE_NAMES:
        prefix = os.path.join(os.fsencode(root), b"envs", raw)
        os.makedirs(os.path.join(prefix, b"conda-meta"))
        Path(os.fsdecode(os.path.join(prefix, b"conda-meta", b"history"))).write_text("")
        Path(os.fsdecode(os.path.join(prefix, b"payload"))).write_bytes(b"p" * 9000)
    exporter = Exporter(exporter_cmd, root, base / "exporter.log")
    yield exporter
    exporter.stop()


def test_hostile_names_are_text_and_run_nothing(driver: WebDriver, hostile: Exporter) -> None:
    page, metrics = load(driver, hostile)
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - the property raises when no dialog is open
    assert driver.execute_script("return window.pwned === undefined") is True
    assert driver.execute_script("return document.querySelectorAll('img').length") == 0
    assert driver.execute_script("return document.querySelectorAll('script').length") == 1  # the page's own
    assert driver.execute_script(  # no element got an event handler attribute from a name
        "return Array.from(document.querySelectorAll('*')).some(function (el) {"
        " return Array.from(el.attributes).some(function (a) { return a.name.indexOf('on') === 0; }); })") is False
    assert page["script"] == "ran"
    assert browser.console(driver) == []
    # every name shows exactly as its label: text, with nothing taken as markup
    labels = {(dict(k)["env"], dict(k)["prefix"]) for k in metrics["conda_env_unique_bytes"]}
    assert {(row["name"], row["prefix"]) for row in page["envs"]} == labels
    assert len(labels) == 4 + len(HOSTILE_NAMES)
    assert {row["name"] for row in page["envs"]} >= {"<img src=x onerror=alert(1)>", "new\nline",
                                                    "latin1-\\xe9\\xff<script>window.pwned=3<"}
    assert [card["root"] for card in page["roots"]] == [dict(k)["root"] for k in metrics["conda_root_bytes"]]
    assert "<script>window.pwned=4;alert(4)</script>" in page["roots"][0]["root"]


def test_the_policy_blocks_any_other_inline_script(driver: WebDriver, served: Exporter) -> None:
    with urllib.request.urlopen(served.url + "/", timeout=5) as response:
        policy = response.headers.get_all("Content-Security-Policy")
    assert policy is not None and len(policy) == 1, policy
    directives = dict(d.strip().split(" ", 1) for d in policy[0].split(";"))
    assert directives["default-src"] == "'none'"
    assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]{43}='", directives["script-src"])  # one hash, no 'unsafe-inline'
    driver.get(served.url + "/")
    browser.console(driver)  # drop what loading logged (nothing, as the test above checks)
    # A script element and an event handler attribute added to the page, as an injected name would be:
    # the policy must refuse both. (execute_script itself runs through the driver, outside the policy.)
    driver.execute_script("""
        window.violations = [];
        document.addEventListener("securitypolicyviolation",
                                  function (e) { window.violations.push(e.violatedDirective); });
        var s = document.createElement("script"); s.textContent = "window.injected = 1"; document.body.appendChild(s);
        var d = document.createElement("div"); d.setAttribute("onclick", "window.injected = 2");
        document.body.appendChild(d); d.click();
    """)
    poll(lambda: True if driver.execute_script("return window.violations.length") >= 2 else None, 10,
         "two CSP violations reported")
    assert driver.execute_script("return window.injected === undefined") is True
    violated = set(driver.execute_script("return window.violations"))
    assert violated <= {"script-src-elem", "script-src-attr", "script-src"}, violated
