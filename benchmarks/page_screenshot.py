"""Screenshot of the page ``/`` over the demo root, for the README: remade after a change of the page by

    .venv/bin/python benchmarks/page_screenshot.py [--out benchmarks/page.png] [--width 1280]

It starts ``conda-env-exporter demo`` on a free port, waits for ``/readyz``, opens ``/`` in Debian's headless
``chromium`` (through ``chromedriver`` and selenium, from the test extras), makes the window as tall as the
page and saves a PNG of it; then stops the exporter. ``--url`` photographs a running exporter instead.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

HERE = Path(__file__).resolve().parent
EXPORTER = str(Path(sys.executable).with_name("conda-env-exporter"))
CHROMIUM_FLAGS = (
    # what headless Chromium needs as root in a container, and no traffic of its own
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], deadline_seconds: float = 60) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"page_screenshot: the exporter exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"page_screenshot: {url}/readyz not ready after {deadline_seconds} s")


def browser(width: int, profile: str) -> webdriver.Chrome:
    """Debian's chromium driven by its chromedriver, with a fresh profile in ``profile``."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        raise SystemExit("page_screenshot: needs Debian's chromium and chromium-driver (apt-get install chromium "
                         "chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},900"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(driver))


def screenshot(url: str, out: Path, width: int) -> int:
    """Save a PNG of the whole page at ``url``, ``width`` CSS pixels wide; returns its size in bytes."""
    with tempfile.TemporaryDirectory(prefix="page-screenshot-") as profile:
        driver = browser(width, profile)
        try:
            driver.get(url + "/")
            for _ in range(5):  # the height depends on the width the window gets, and may wrap anew
                height = int(driver.execute_script("return document.documentElement.scrollHeight"))
                inner = int(driver.execute_script("return window.innerHeight"))
                if inner >= height:
                    break
                size = driver.get_window_size()  # outer size: the viewport plus any window frame
                driver.set_window_size(width, size["height"] + height - inner)
            driver.execute_async_script(  # let it lay out and paint at the new size
                "var done = arguments[0]; requestAnimationFrame(function () { requestAnimationFrame(done); });")
            out.parent.mkdir(parents=True, exist_ok=True)
            if not driver.save_screenshot(str(out)):
                raise SystemExit("page_screenshot: chromium took no screenshot")
        finally:
            driver.quit()
    return out.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "page.png", help="PNG to write (default: %(default)s)")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels (default: %(default)s)")
    parser.add_argument("--url", help="a running exporter (http://host:port) instead of a demo started here")
    args = parser.parse_args()
    if args.url:
        size = screenshot(args.url.rstrip("/"), args.out, args.width)
        print(f"{args.out}: {size} bytes")
        return 0
    port = free_port()
    proc = subprocess.Popen([EXPORTER, "demo", "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warning"])
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        size = screenshot(url, args.out, args.width)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    print(f"{args.out}: {size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
