"""A real headless Chromium (Debian's `chromium` and its matching `chromium-driver`), driven by Selenium."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
# Chromium quiet and local: no sandbox (tests may run as root), no GPU, no background traffic of any kind.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--no-first-run",
         "--disable-extensions", "--disable-dev-shm-usage", "--window-size=1280,900"]


def chromium():
    """A started Chromium WebDriver with the browser's console log kept; skips where Chromium is absent."""
    if not (CHROMIUM and DRIVER):
        pytest.skip("no chromium/chromedriver here (make test installs Debian's chromium and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages, read back by get_log
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def full_page_screenshot(driver, path: Path) -> tuple[int, int]:
    """A PNG of the whole page, not just the window; returns its CSS size (width, height)."""
    import base64
    size = driver.execute_script("return [document.documentElement.scrollWidth, "
                                 "document.documentElement.scrollHeight]")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return size[0], size[1]
