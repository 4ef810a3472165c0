"""End to end in headless Chromium (selenium): MapLibre draws geopix tiles served by ``geopix serve``
(folder, PMTiles through Range requests, MBTiles), from a plain page given only the TileJSON URL
(cross-origin, through ``--cors``), and from a statically hosted folder written with ``--base-url``.

Skips with the reason when Chromium, chromedriver or selenium is missing
(``apt-get install chromium chromium-driver``; ``pip install selenium``).
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geopix.pyramid import PyramidConfig, build_pyramid
from geopix.testing import _scene, synthetic_aerial

REPO = Path(__file__).resolve().parents[1]
VENDOR = REPO / "geopix" / "serve_static" / "vendor"
MAP_GREEN = np.array([202, 223, 170])  # the synthetic scene's vegetation colour
PLAIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">
<link rel="stylesheet" href="maplibre-gl.css"><style>html,body,#map{margin:0;height:100%}</style></head>
<body><div id="map"></div><script type="module">
import * as maplibregl from "./maplibre-gl.mjs";
const state = window.geopixViewer = { errors: [], loaded: { map: 0 }, idle: false };
const url = new URLSearchParams(location.search).get("tilejson");
const tj = await (await fetch(url)).json();
const map = new maplibregl.Map({ container: "map", bounds: tj.bounds, fitBoundsOptions: { animate: false },
  style: { version: 8, sources: { map: { type: "raster", url } },
           layers: [{ id: "map", type: "raster", source: "map", paint: { "raster-fade-duration": 0 } }] } });
map.on("error", (e) => state.errors.push(String(e.error?.message || e.error || e)));
map.on("data", (e) => { if (e.dataType === "source" && e.tile) state.loaded.map += 1; });
map.on("idle", () => { state.idle = true; });
document.body.dataset.ready = "1";
</script></body></html>"""


def _find(*names: str) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    chrome, chromedriver = _find("chromium", "chromium-browser", "google-chrome"), _find("chromedriver")
    if chrome is None or chromedriver is None:
        pytest.skip("Chromium or chromedriver is missing (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--use-angle=swiftshader",  # WebGL on the CPU: MapLibre needs WebGL 2 and there is no GPU
        "--enable-unsafe-swiftshader",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}",
        "--window-size=900,650",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A map raster (the synthetic scene's map colours, NW quarter masked), its aerial, and its tile sets."""
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
        dst.update_tags(GEOPIX_MODEL="sat2map.safetensors", GEOPIX_SOURCE="aerial.tif")
    out = {"aerial": aerial, "map": root / "map.tif"}
    for kind, name in (("dir", "tiles"), ("pmtiles", "t.pmtiles"), ("mbtiles", "t.mbtiles")):
        out[kind] = build_pyramid(root / "map.tif", root / name, PyramidConfig(), scheduler="sync").path
    return out


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class StaticHost:
    """A plain static web server (the stdlib's) over a folder, standing in for any static host."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(QuietHandler, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def plain_page_host(root: Path) -> StaticHost:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("maplibre-gl.mjs", "maplibre-gl-worker.mjs", "maplibre-gl.css"):
        shutil.copy(VENDOR / name, root / name)
    (root / "page.html").write_text(PLAIN_PAGE)
    return StaticHost(root)


@pytest.fixture
def serve():
    procs = []

    def start(*args: str) -> str:
        cmd = [sys.executable, "-m", "geopix", "serve", *args, "--port", "0"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        procs.append(proc)
        line = proc.stdout.readline()  # "serving … at http://127.0.0.1:PORT/ (viewer) …"
        if "http://" not in line:
            proc.kill()
            pytest.fail(f"geopix serve did not start: {line!r} {proc.stderr.read()!r}")
        return line.split(" at ", 1)[1].split()[0]

    yield start
    for proc in procs:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
        assert "Traceback" not in err, err  # disconnects and shutdown stay quiet


def draw(driver, url: str, static_host: bool = False) -> tuple[dict, np.ndarray, list[str]]:
    """Load ``url``, wait until MapLibre is idle with its tiles drawn; (state, screenshot, resource URLs).

    A static host answers 404 for the empty tiles geopix does not write (``geopix serve`` answers
    204); Chromium logs those as failed loads, MapLibre draws nothing there.  With ``static_host``
    such tile 404s are the only console errors allowed.
    """
    from PIL import Image
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop earlier pages' entries
    driver.get(url)
    wait = WebDriverWait(driver, 90, poll_frequency=0.2)
    wait.until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
    wait.until(lambda d: d.execute_script("const s = window.geopixViewer; return s.errors.length > 0 || s.idle"))
    state = driver.execute_script("return window.geopixViewer")
    assert state["errors"] == [], state["errors"]
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    if static_host:
        severe = [e for e in severe if not (".png - Failed to load resource" in e["message"] and "404" in e["message"])]
    assert not severe, f"console errors: {severe}"
    png = driver.get_screenshot_as_png()
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return state, np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int), resources


def map_painted(img: np.ndarray) -> float:
    """The fraction of the screenshot in the map's vegetation green."""
    return float((np.abs(img - MAP_GREEN).max(axis=-1) <= 8).mean())


@pytest.mark.parametrize("kind", ["dir", "pmtiles", "mbtiles"])
def test_viewer_draws_each_tile_set(driver, scene: dict[str, Path], serve, kind: str) -> None:
    from selenium.webdriver.common.by import By

    url = serve(str(scene[kind]))
    state, img, resources = draw(driver, url)
    assert state["loaded"]["map"] > 0 and state["loaded"]["aerial"] == 0
    assert map_painted(img) > 0.01, "no map-coloured pixels in the screenshot"
    assert not driver.find_element(By.ID, "opacity-row").is_displayed()  # no --source: no comparison control
    attribution = driver.find_element(By.CLASS_NAME, "maplibregl-ctrl-attrib").text
    assert "with the sat2map model" in attribution
    tile_requests = [r for r in resources if "/tiles/" in r]
    if kind == "pmtiles":  # read through Range requests on the archive, never the tile endpoint
        assert any(r.endswith("/tiles.pmtiles") for r in resources) and not tile_requests
    else:
        assert tile_requests


def test_viewer_with_source_compares(driver, scene: dict[str, Path], serve) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url = serve(str(scene["dir"]), "--source", str(scene["aerial"]))
    state, img, _ = draw(driver, url)
    assert state["loaded"]["map"] > 0 and state["loaded"]["aerial"] > 0
    assert driver.find_element(By.ID, "opacity-row").is_displayed()
    attribution = driver.find_element(By.CLASS_NAME, "maplibregl-ctrl-attrib").text
    assert "Imagery: aerial.tif" in attribution and "sat2map" in attribution
    assert map_painted(img) > 0.01
    driver.execute_script(
        "window.geopixViewer.idle = false;"
        "const o = document.getElementById('opacity'); o.value = 0; o.dispatchEvent(new Event('input'));"
    )
    assert driver.execute_script("return window.geopixMap.getPaintProperty('map', 'raster-opacity')") == 0
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return window.geopixViewer.idle"))
    faded = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")).astype(int)
    assert map_painted(faded) < map_painted(img) / 4  # the aerial shows through
    driver.execute_script(
        "const o = document.getElementById('opacity'); o.value = 100; o.dispatchEvent(new Event('input'));"
    )
    driver.execute_script("window.geopixMap.jumpTo({ center: [0, 0], zoom: 3 })")
    driver.find_element(By.ID, "fit").click()
    bounds = driver.execute_script("return window.geopixMap.getBounds().toArray()")
    lon, lat = driver.execute_script("const c = window.geopixMap.getCenter(); return [c.lng, c.lat]")
    assert bounds[0][0] < lon < bounds[1][0] and abs(lon) > 1 and abs(lat) > 1  # back over the data


@pytest.mark.parametrize("kind", ["dir", "pmtiles", "mbtiles"])
def test_plain_page_given_only_the_tilejson_url(
    driver, scene: dict[str, Path], serve, kind: str, tmp_path: Path
) -> None:
    """Another origin's page draws the tiles from the TileJSON URL alone (CORS through --cors)."""
    host = plain_page_host(tmp_path / "site")
    try:
        base = serve(str(scene[kind]), "--cors", host.url)
        state, img, resources = draw(driver, f"{host.url}/page.html?tilejson={base}tilejson.json")
        assert state["loaded"]["map"] > 0 and map_painted(img) > 0.01
        assert any("/tiles/" in r for r in resources)
    finally:
        host.close()


def test_static_hosted_folder_with_base_url(driver, scene: dict[str, Path], tmp_path: Path) -> None:
    """A folder written with --base-url draws from a plain static host, no geopix server involved."""
    site = tmp_path / "site"
    host = plain_page_host(site)
    try:
        cfg = PyramidConfig(base_url=f"{host.url}/city/tiles/")
        build_pyramid(scene["map"], site / "city" / "tiles", cfg, scheduler="sync")
        state, img, resources = draw(driver, f"{host.url}/page.html?tilejson={host.url}/city/tiles/tilejson.json", True)
        assert state["loaded"]["map"] > 0 and map_painted(img) > 0.01
        assert any("/city/tiles/" in r and r.endswith(".png") for r in resources)
    finally:
        host.close()
