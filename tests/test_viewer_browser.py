"""End to end: ``geopix serve`` in a subprocess, the viewer in headless Chromium (selenium).

Skips with the reason when Chromium, chromedriver or selenium is missing
(``apt-get install chromium chromium-driver``; ``pip install selenium``).  Set
``GEOPIX_SAVE_SCREENSHOT=1`` to refresh ``docs/img/viewer.png`` from this run.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geopix.pyramid import PyramidConfig, build_pyramid
from geopix.testing import _scene, synthetic_aerial

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "docs" / "img" / "viewer.png"
BACKGROUND = np.array([[0xE6, 0xE9, 0xED], [0xD5, 0xD9, 0xDE], [0xDD, 0xE1, 0xE6]])  # viewer.css greys


def _find(*names: str) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


@pytest.fixture(scope="module")
def browser_tools() -> tuple[str, str]:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    chrome = _find("chromium", "chromium-browser", "google-chrome")
    driver = _find("chromedriver")
    if chrome is None or driver is None:
        pytest.skip("Chromium or chromedriver is missing (apt-get install chromium chromium-driver)")
    return chrome, driver


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A map raster (the synthetic scene's map colours, NW quarter masked) and its aerial."""
    root = tmp_path_factory.mktemp("viewer")
    aerial = synthetic_aerial(root / "aerial.tif", 384, seed=3)
    _, map_rgb = _scene((384, 384), 3)
    with rasterio.open(aerial) as s:
        profile = s.profile
    mask = np.full((384, 384), 255, np.uint8)
    mask[:192, :192] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(root / "map.tif", "w", **profile) as dst:
        dst.write(np.where(mask > 0, map_rgb.transpose(2, 0, 1), 0))
        dst.write_mask(mask)
    tiles = build_pyramid(root / "map.tif", root / "tiles", PyramidConfig(), scheduler="sync")
    return tiles.path, aerial


@pytest.fixture
def server(scene: tuple[Path, Path]) -> Iterator[str]:
    tiles, aerial = scene
    cmd = [sys.executable, "-m", "geopix", "serve", str(tiles), "--port", "0", "--source", str(aerial)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()  # "serving … at http://127.0.0.1:PORT/ (viewer) …"
        if "http://" not in line:
            proc.kill()
            pytest.fail(f"geopix serve did not start: {line!r} {proc.stderr.read()!r}")
        yield line.split(" at ", 1)[1].split()[0]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_viewer_draws_tiles_without_errors(browser_tools: tuple[str, str], server: str, tmp_path: Path) -> None:
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chrome, chromedriver = browser_tools
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=900,650",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    try:
        driver.get(server)
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        wait.until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        # every requested map and aerial tile has been fetched and drawn
        js_pending = """
            const s = window.geopixViewer;
            const all = document.querySelectorAll('#tiles-layer img, #source-layer img').length;
            const done = document.querySelectorAll('img[data-loaded]').length;
            if (s.errors.length) return true;  // fail fast below, with the errors
            return all > 0 && done + s.empty >= all && s.loaded.tiles > 0 && s.loaded.source > 0;
        """
        wait.until(lambda d: d.execute_script(js_pending))
        state = driver.execute_script("return window.geopixViewer")
        assert state["errors"] == [], driver.get_log("browser")
        drawn = driver.find_elements(By.CSS_SELECTOR, "#tiles-layer img[data-loaded]")
        assert drawn and all(driver.execute_script("return arguments[0].naturalWidth", img) == 256 for img in drawn)
        assert state["empty"] > 0  # the masked quarter's tiles answered 204 and were skipped
        assert "Map generated by geopix" in driver.find_element(By.ID, "attribution").text

        # controls: opacity changes the map layer; the swipe clips it
        driver.execute_script(
            "const o = document.getElementById('opacity'); o.value = 60; o.dispatchEvent(new Event('input'));"
        )
        assert driver.execute_script("return document.getElementById('tiles-layer').style.opacity") == "0.6"
        driver.execute_script(
            "const o = document.getElementById('opacity'); o.value = 100; o.dispatchEvent(new Event('input'));"
        )
        assert driver.find_element(By.ID, "swipe-row").is_displayed()
        clip = driver.execute_script("return document.getElementById('tiles-layer').style.clipPath")
        assert clip.startswith("inset(")
        zoom = state["zoom"]
        driver.find_element(By.ID, "zoom-in").click()
        wait.until(lambda d: d.execute_script(js_pending))
        assert driver.execute_script("return window.geopixViewer.zoom") in (zoom, zoom + 1)
        driver.find_element(By.ID, "fit").click()
        wait.until(lambda d: d.execute_script(js_pending))
        time.sleep(0.3)

        png = driver.get_screenshot_as_png()
        logs = driver.get_log("browser")
    finally:
        driver.quit()

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    near_bg = (np.abs(img[:, :, None, :] - BACKGROUND[None, None]).max(axis=-1) <= 6).any(axis=-1)
    # map colours (vegetation green, water blue) and aerial colours both appear: tiles were painted
    assert (~near_bg).mean() > 0.2
    green = (np.abs(img - [202, 223, 170]).max(axis=-1) <= 8).mean()
    assert green > 0.005, "no map-coloured pixels in the screenshot"
    severe = [e for e in logs if e.get("level") == "SEVERE"]
    assert not severe, f"console errors: {severe}"
    (tmp_path / "viewer.png").write_bytes(png)
    if os.environ.get("GEOPIX_SAVE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(png)
