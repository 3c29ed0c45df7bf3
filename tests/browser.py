"""Debian's headless Chromium, driven through its chromedriver by selenium, for the tests of the page ``/``.

``tests/run`` installs ``chromium`` and ``chromium-driver`` when missing; where they still are not there, the
tests that need them are skipped and say why.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM_FLAGS = (
    # what headless Chromium needs as root in a container, and no traffic of its own
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)


def missing() -> str:
    """Why the browser tests cannot run here ("" when they can)."""
    absent = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    return f"{' and '.join(absent)} not installed (apt-get install chromium chromium-driver)" if absent else ""


@contextmanager
def chromium(width: int = 1280, height: int = 900, javascript: bool = True) -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium (its own profile dir) whose console messages :func:`console` returns; with
    ``javascript`` False, one that runs no page script (as a reader who turned it off)."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        if not javascript:
            options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))
        try:
            yield driver
        finally:
            driver.quit()


def png_size_and_colours(data: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct byte values of the decoded (still filtered) scanlines of a
    PNG: a blank picture has a handful of byte values, a page with text and bars hundreds. Read with zlib
    alone (no imaging library is installed)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def console(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The console messages since the last call (errors, CSP violations, failed loads, ...)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries
