"""A real headless Chromium (Debian's `chromium` and its matching `chromium-driver`), driven by Selenium."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ARTIFACTS = Path(os.environ.get("TENFOLD_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))

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


def check_page(page: Path, screenshot: Path, image_ids: list[str]) -> Path:
    """Open `page` from disk; assert its images are exactly `image_ids`, all loaded (naturalWidth > 0), drawn
    inside a full-page screenshot (not blank there), with no console errors or warnings. Returns the screenshot."""
    driver = chromium()
    try:
        driver.get(page.as_uri())
        images = driver.execute_script(
            "return [...document.images].map(i => ({id: i.id, complete: i.complete, w: i.naturalWidth, "
            "r: i.getBoundingClientRect().toJSON(), y: i.getBoundingClientRect().top + window.scrollY}))")
        console = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR", "WARNING")]
        width, height = full_page_screenshot(driver, screenshot)
    finally:
        driver.quit()
    assert [i["id"] for i in images] == image_ids
    assert all(i["complete"] and i["w"] > 0 for i in images), images
    assert console == []
    with Image.open(screenshot) as im:
        shot = np.asarray(im.convert("L"), dtype=np.float32)
    assert shot.shape[:2] == (height, width)
    for i in images:  # each figure lies inside the screenshot and is drawn there (not a blank box)
        x, y, w, h = (int(i["r"]["left"]), int(i["y"]), int(i["r"]["width"]), int(i["r"]["height"]))
        assert w > 200 and h > 150 and y + h <= height and x + w <= width, i
        assert shot[y:y + h, x:x + w].std() > 10, i["id"]
    return screenshot
