"""A map raster on the Web-Mercator tile grid: what the tiler knows of it, and which zooms and tiles cover it.

* **Max zoom** (unless ``--zoom`` says otherwise): the *smallest* zoom whose tile
  resolution at the raster's centre latitude is <= the raster's ground resolution, so the
  top level never throws detail away (it may upsample by less than 2×).  Min zoom: the
  largest zoom at which the whole raster fits in one tile's width.
* Tiles are addressed as ``mercantile`` does (XYZ, row 0 at the north); a *meta-tile* is the
  group of tiles under one ancestor a few zooms up, the unit of work of ``geopix.pyramid``.

Used by the pyramid build and by the GeoTIFF tile set (``tilesets.geotiff``), which serves the
zooms a pyramid of the same raster would have.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mercantile
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.warp import transform_bounds

from geopix.errors import EmptyRasterError, MissingCRSError, TileFormatError
from geopix.read import ground_resolution, open_raster
from geopix.source import gdal_name, url_of

MAX_ZOOM_LIMIT = 24
EARTH_CIRCUMFERENCE_M = 2 * math.pi * 6378137.0
LL_EPSILON = 1e-11  # as mercantile.tiles: a tile's own bounds select exactly that tile


@dataclass(frozen=True, slots=True)
class MapSource:
    """What the tiler needs to know about a map GeoTIFF; small and picklable."""

    path: str
    bounds: tuple[float, float, float, float]  # lon/lat, clamped to Web Mercator
    ground_resolution_m: float
    centre_lat: float
    rgb: tuple[int, int, int]  # 1-based bands
    alpha: int | None  # 1-based alpha band
    has_mask: bool  # has a mask, nodata or alpha (some pixels *may* be invalid; see has_invalid_pixels)
    tags: dict[str, str] = field(default_factory=dict)


def inspect_map(path: str | Path) -> MapSource:
    """Open and check a map raster (a path, URL or ``/vsi…`` name) once on the client."""
    name = gdal_name(str(path))  # workers open the same name: a URL needs no shared folder
    path = url_of(name)
    with open_raster(name, "map raster") as src:
        if src.crs is None:
            raise MissingCRSError(f"{path} has no CRS, so it cannot be placed on a web map; assign one first")
        if src.width < 1 or src.height < 1:
            raise EmptyRasterError(f"{path} is empty ({src.width}×{src.height})")
        if src.dtypes[0] != "uint8":
            raise TileFormatError(f"{path} is {src.dtypes[0]}; web tiles are cut from 8-bit RGB maps")
        interp = list(src.colorinterp)
        alpha = interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else None
        colour = [b for b in range(1, src.count + 1) if b != alpha]
        if len(colour) >= 3:
            rgb = (colour[0], colour[1], colour[2])
        elif len(colour) == 1:
            rgb = (colour[0],) * 3
        else:
            raise TileFormatError(f"{path} has {src.count} bands; expected RGB, RGBA or one grey band")
        flags = src.mask_flag_enums[0]
        has_mask = alpha is not None or src.nodata is not None or MaskFlags.all_valid not in flags
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
        w, s, e, n = max(-180.0, w), max(-85.051129, s), min(180.0, e), min(85.051129, n)
        if w >= e or s >= n:
            raise EmptyRasterError(f"{path} does not overlap the Web Mercator world (bounds {w, s, e, n})")
        res = min(ground_resolution(src))
        return MapSource(
            path=name,
            bounds=(w, s, e, n),
            ground_resolution_m=res,
            centre_lat=(s + n) / 2,
            rgb=rgb,
            alpha=alpha,
            has_mask=has_mask,
            tags={k: v for k, v in src.tags().items() if k.startswith("GEOPIX_") or k == "TIFFTAG_COPYRIGHT"},
        )


def has_invalid_pixels(src: MapSource) -> bool:
    """Whether any pixel is masked; scanned block by block (bounded memory), stopping at the first."""
    if not src.has_mask:
        return False
    with rasterio.open(src.path) as ds:
        for _, win in ds.block_windows(1):
            mask = ds.read(src.alpha, window=win) if src.alpha else ds.read_masks(src.rgb[0], window=win)
            if not mask.all():
                return True
    return False


def tile_resolution(zoom: int, lat: float, tile_size: int = 256) -> float:
    """Ground metres per tile pixel at ``zoom`` and latitude ``lat``."""
    return EARTH_CIRCUMFERENCE_M * math.cos(math.radians(lat)) / (tile_size * 2**zoom)


def auto_maxzoom(ground_resolution_m: float, lat: float, tile_size: int = 256) -> int:
    """The smallest zoom whose tile resolution at ``lat`` is <= the raster's (no downsampling)."""
    z = math.log2(EARTH_CIRCUMFERENCE_M * math.cos(math.radians(lat)) / (tile_size * ground_resolution_m))
    zoom = math.ceil(z - 1e-9)  # a raster exactly at a zoom's resolution gets that zoom
    return int(min(MAX_ZOOM_LIMIT, max(0, zoom)))


def auto_minzoom(src: MapSource, maxzoom: int, tile_size: int = 256) -> int:
    """The largest zoom at which the raster's extent is no wider or taller than one tile."""
    w, s, e, n = src.bounds
    x0, y1 = mercantile.xy(w, s)
    x1, y0 = mercantile.xy(e, n)
    extent = max(x1 - x0, y0 - y1)
    world = 2 * math.pi * 6378137.0
    z = math.floor(math.log2(world / extent)) if extent > 0 else maxzoom
    return int(max(0, min(maxzoom, z)))


def tile_range(bounds: tuple[float, float, float, float], zoom: int) -> tuple[int, int, int, int]:
    """``(xmin, ymin, xmax, ymax)`` inclusive: exactly the tiles ``mercantile.tiles`` yields."""
    w, s, e, n = bounds
    ul = mercantile.tile(w, n, zoom)
    lr = mercantile.tile(e - LL_EPSILON, s + LL_EPSILON, zoom)
    return ul.x, ul.y, lr.x, lr.y


def meta_groups(
    bounds: tuple[float, float, float, float], zoom: int, level: int
) -> Iterator[tuple[tuple[int, int], ...]]:
    """The tiles of ``zoom`` over ``bounds``, grouped by their ancestor ``level`` zooms up (lazily)."""
    xmin, ymin, xmax, ymax = tile_range(bounds, zoom)
    k = 2 ** min(level, zoom)
    for py in range(ymin // k, ymax // k + 1):
        for px in range(xmin // k, xmax // k + 1):
            xs = range(max(xmin, px * k), min(xmax, px * k + k - 1) + 1)
            ys = range(max(ymin, py * k), min(ymax, py * k + k - 1) + 1)
            yield tuple((x, y) for y in ys for x in xs)


def group_by_ancestor(tiles: list[tuple[int, int]], level: int) -> Iterator[tuple[tuple[int, int], ...]]:
    """Consecutive runs of ``tiles`` sharing an ancestor ``level`` zooms up (input sorted by row)."""
    k = 2**level
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for x, y in tiles:
        groups.setdefault((x // k, y // k), []).append((x, y))
    for key in sorted(groups, key=lambda p: (p[1], p[0])):
        yield tuple(groups[key])
