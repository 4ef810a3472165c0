"""Cutting web tiles, on a worker: a max-zoom meta-tile warped from the map, a lower-zoom tile from its four children.

* **Max-zoom tiles** are warped straight from the GeoTIFF with rasterio's ``WarpedVRT``
  (EPSG:3857, bilinear, the raster's mask/alpha/nodata carried into the tile's alpha), one
  meta-tile window per task, so memory stays bounded whatever the raster size.
* **Lower zooms** are built from the tiles already written: 2×2 children averaged with their
  alpha as weights, so nodata never bleeds in as dark fringes and coverage stays exact
  (alpha is the fraction of valid pixels).
* Fully transparent tiles are not written.  Workers write their tiles into the staging folder
  themselves; only tile addresses (and byte counts) go back to the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mercantile
import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_bounds
from rasterio.vrt import WarpedVRT

from geopix.read import damaged_is_an_error
from geopix.tilesets import folder
from geopix.tilesets.base import Tile
from geopix.tilesets.codec import decode_tile, encode_tile
from geopix.write import disk_full_is_an_error
from geopix.zooms import MapSource

#: What a full disk while cutting tiles leaves to do (``write.disk_full_is_an_error``).
RERUN_TILES = "OUT on a larger disk) and rerun the same command; nothing of this run is kept"


def downsample2(rgba: np.ndarray) -> np.ndarray:
    """``(4, 2T, 2T)`` → ``(4, T, T)``: alpha-weighted 2×2 mean; alpha becomes the valid fraction.

    Weighting colour by alpha means invalid (black, transparent) pixels never darken the
    edge of the data, and a pixel is transparent only when all four children are.
    """
    _, h, w = rgba.shape
    t_h, t_w = h // 2, w // 2
    a = rgba[3].astype(np.float32).reshape(t_h, 2, t_w, 2)
    rgb = rgba[:3].astype(np.float32).reshape(3, t_h, 2, t_w, 2)
    wsum = a.sum(axis=(1, 3))
    num = (rgb * a[None]).sum(axis=(2, 4))
    out = np.empty((4, t_h, t_w), np.uint8)
    alpha = np.round(wsum / 4.0)
    colour = np.where(wsum > 0, num / np.maximum(wsum, 1e-6), 0.0)
    out[:3] = np.clip(np.round(colour), 0, 255).astype(np.uint8)
    out[3] = alpha.astype(np.uint8)
    out[:3][:, out[3] == 0] = 0
    return out


@dataclass(frozen=True, slots=True)
class TileJob:
    """Everything a worker needs besides its tile group; small and picklable."""

    source: MapSource
    staging: str  # folder of {z}/{x}/{y}.{ext}
    format: str
    tile_size: int
    quality: int


def _write(job: TileJob, z: int, x: int, y: int, rgba: np.ndarray) -> int:
    with disk_full_is_an_error(Path(job.staging), RERUN_TILES):
        return folder.write_tile(job.staging, Tile(z, x, y, encode_tile(rgba, job.format, job.quality)), job.format)


def render_group(job: TileJob, zoom: int, tiles: tuple[tuple[int, int], ...]) -> tuple[list[tuple[int, int]], int]:
    """Warp one meta-tile window at ``zoom`` and write its non-empty tiles; return (written, bytes)."""
    t = job.tile_size
    xs = [x for x, _ in tiles]
    ys = [y for _, y in tiles]
    x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    left, _, _, top = mercantile.xy_bounds(x0, y0, zoom)
    _, bottom, right, _ = mercantile.xy_bounds(x1, y1, zoom)
    width, height = (x1 - x0 + 1) * t, (y1 - y0 + 1) * t
    src_info = job.source
    vrt_opts = {
        "crs": "EPSG:3857",
        "transform": from_bounds(left, bottom, right, top, width, height),
        "width": width,
        "height": height,
        "resampling": Resampling.bilinear,
    }
    if src_info.alpha is not None:
        vrt_opts.update(src_alpha=src_info.alpha, dst_alpha=src_info.alpha)
    else:
        vrt_opts["add_alpha"] = True
    with (
        rasterio.open(src_info.path) as src,
        WarpedVRT(src, **vrt_opts) as vrt,
        damaged_is_an_error(src_info.path, f" at zoom {zoom}"),
    ):
        alpha_band = src_info.alpha if src_info.alpha is not None else vrt.count
        data = vrt.read([*src_info.rgb, alpha_band])
    written, nbytes = [], 0
    for x, y in tiles:
        r, c = (y - y0) * t, (x - x0) * t
        tile = data[:, r : r + t, c : c + t]
        if not tile[3].any():
            continue
        tile = tile.copy()
        tile[:3][:, tile[3] == 0] = 0
        nbytes += _write(job, zoom, x, y, tile)
        written.append((x, y))
    return written, nbytes


def reduce_group(job: TileJob, zoom: int, tiles: tuple[tuple[int, int], ...]) -> tuple[list[tuple[int, int]], int]:
    """Build ``tiles`` at ``zoom`` from their written children at ``zoom + 1``; return (written, bytes)."""
    t = job.tile_size
    written, nbytes = [], 0
    for x, y in tiles:
        mosaic = np.zeros((4, 2 * t, 2 * t), np.uint8)
        found = False
        for dy in (0, 1):
            for dx in (0, 1):
                path = folder.tile_path(job.staging, zoom + 1, 2 * x + dx, 2 * y + dy, job.format)
                if path.exists():
                    mosaic[:, dy * t : dy * t + t, dx * t : dx * t + t] = decode_tile(path.read_bytes())
                    found = True
        if not found:
            continue
        tile = downsample2(mosaic)
        if not tile[3].any():
            continue
        nbytes += _write(job, zoom, x, y, tile)
        written.append((x, y))
    return written, nbytes
