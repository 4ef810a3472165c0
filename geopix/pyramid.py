"""Web-Mercator XYZ tile pyramid from a map GeoTIFF: zoom maths and the build.

The output formats (a tile folder, PMTiles or MBTiles), the tile codecs and the TileJSON live in
``geopix.tilesets``; this module decides which tiles exist and computes them.  How, and why:

* **Max zoom** (unless ``--zoom`` says otherwise): the *smallest* zoom whose tile
  resolution at the raster's centre latitude is <= the raster's ground resolution, so the
  top level never throws detail away (it may upsample by less than 2×).  Min zoom: the
  largest zoom at which the whole raster fits in one tile's width.
* **Max-zoom tiles** are warped straight from the GeoTIFF with rasterio's ``WarpedVRT``
  (EPSG:3857, bilinear, the raster's mask/alpha/nodata carried into the tile's alpha).
  One Dask task per *meta-tile*: the max-zoom tiles under one zoom ``max - 3`` parent
  (8×8 tiles, 2048² px at 256 px), so a task reads one window and memory stays bounded
  whatever the raster size.  Workers write their tiles themselves; only tile addresses
  come back to the client.
* **Lower zooms** are built level by level from the tiles already written: 2×2 children
  averaged with their alpha as weights, so nodata never bleeds in as dark fringes and
  coverage stays exact (alpha is the fraction of valid pixels).
* Fully transparent tiles are not written.  Tiles are staged as files in
  ``OUT.partial`` (folder output) or ``OUT.partial.d`` (archives, packed at the end into
  ``OUT.partial``); the final name appears only by a rename once everything is complete.

Workers on a remote ``--scheduler`` need the input and output paths on a shared filesystem,
as for ``geopix render``.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geopix.cluster import open_cluster, run_tasks
from geopix.config import ProgressFn
from geopix.errors import (
    EmptyRasterError,
    MissingCRSError,
    TileFormatError,
    ZoomRangeError,
)
from geopix.output import check_output
from geopix.tilesets import folder, mbtiles, output_kind, pmtiles
from geopix.tilesets.base import Tile
from geopix.tilesets.codec import TILE_FORMATS, TileFormat, decode_tile, encode_tile
from geopix.tilesets.tilejson import attribution_for, make_tilejson, tiles_template

TILE_SIZES = (256, 512)
MAX_ZOOM_LIMIT = 24
EARTH_CIRCUMFERENCE_M = 2 * math.pi * 6378137.0
LL_EPSILON = 1e-11  # as mercantile.tiles: a tile's own bounds select exactly that tile
WRITERS = {"pmtiles": pmtiles.write, "mbtiles": mbtiles.write}


# ---- configuration and result ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PyramidConfig:
    """How to cut the pyramid; ``None`` zooms are chosen from the raster (see module doc)."""

    minzoom: int | None = None
    maxzoom: int | None = None
    format: TileFormat = "png"
    tile_size: int = 256
    overwrite: bool = False
    quality: int = 90  # webp / jpg
    meta_level: int = 3  # a max-zoom task covers the 2**meta_level × 2**meta_level tiles of one parent
    name: str | None = None
    attribution: str | None = None
    base_url: str | None = None  # where a folder will be hosted: its TileJSON gets absolute tile URLs

    def __post_init__(self) -> None:
        if self.format not in TILE_FORMATS:
            raise TileFormatError(f"--format {self.format!r} is unknown; choose one of {', '.join(TILE_FORMATS)}")
        if self.tile_size not in TILE_SIZES:
            raise TileFormatError(f"--tile-size {self.tile_size} must be 256 or 512")
        for label, z in (("min", self.minzoom), ("max", self.maxzoom)):
            if z is not None and not 0 <= z <= MAX_ZOOM_LIMIT:
                raise ZoomRangeError(f"{label} zoom {z} is outside 0..{MAX_ZOOM_LIMIT}")
        if self.minzoom is not None and self.maxzoom is not None and self.minzoom > self.maxzoom:
            raise ZoomRangeError(f"--zoom {self.minzoom}-{self.maxzoom}: the first zoom must not exceed the second")
        if not 1 <= self.quality <= 100:
            raise TileFormatError(f"quality {self.quality} must be within 1..100")
        if not 0 <= self.meta_level <= 6:
            raise TileFormatError(f"meta_level {self.meta_level} must be within 0..6")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise TileFormatError(
                f"--base-url {self.base_url!r} must be an absolute http(s) URL, e.g. https://example.org/tiles/"
            )


def parse_zoom(text: str) -> tuple[int, int]:
    """``"12-18"`` → ``(12, 18)``; ``"15"`` → ``(15, 15)``."""
    parts = text.strip().split("-")
    try:
        if len(parts) == 1:
            lo = hi = int(parts[0])
        elif len(parts) == 2:
            lo, hi = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise ZoomRangeError(f"--zoom {text!r} must look like 12-18 or 15") from None
    if not (0 <= lo <= MAX_ZOOM_LIMIT and 0 <= hi <= MAX_ZOOM_LIMIT) or lo > hi:
        raise ZoomRangeError(f"--zoom {text!r} must be MIN-MAX with 0 <= MIN <= MAX <= {MAX_ZOOM_LIMIT}")
    return lo, hi


@dataclass(frozen=True)
class PyramidResult:
    """What ``build_pyramid`` wrote."""

    path: Path
    kind: str  # dir | pmtiles | mbtiles
    format: str
    tile_size: int
    minzoom: int
    maxzoom: int
    bounds: tuple[float, float, float, float]  # lon/lat
    tiles_per_zoom: dict[int, int]
    bytes: int
    seconds: float
    tilejson: dict = field(default_factory=dict)

    @property
    def tiles(self) -> int:
        return sum(self.tiles_per_zoom.values())


# ---- the source raster ----------------------------------------------------------------------
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
    from rasterio.enums import ColorInterp, MaskFlags
    from rasterio.warp import transform_bounds

    from geopix.read import ground_resolution, open_raster
    from geopix.source import gdal_name, url_of

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
    import rasterio

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
    import mercantile

    w, s, e, n = src.bounds
    x0, y1 = mercantile.xy(w, s)
    x1, y0 = mercantile.xy(e, n)
    extent = max(x1 - x0, y0 - y1)
    world = 2 * math.pi * 6378137.0
    z = math.floor(math.log2(world / extent)) if extent > 0 else maxzoom
    return int(max(0, min(maxzoom, z)))


def zoom_range(src: MapSource, config: PyramidConfig) -> tuple[int, int]:
    maxz = (
        config.maxzoom
        if config.maxzoom is not None
        else auto_maxzoom(src.ground_resolution_m, src.centre_lat, config.tile_size)
    )
    minz = config.minzoom if config.minzoom is not None else auto_minzoom(src, maxz, config.tile_size)
    if minz > maxz:
        raise ZoomRangeError(f"min zoom {minz} exceeds max zoom {maxz}; pass --zoom MIN-MAX")
    return minz, maxz


def tile_range(bounds: tuple[float, float, float, float], zoom: int) -> tuple[int, int, int, int]:
    """``(xmin, ymin, xmax, ymax)`` inclusive: exactly the tiles ``mercantile.tiles`` yields."""
    import mercantile

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


# ---- lower zooms ----------------------------------------------------------------------------
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


# ---- worker side ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TileJob:
    """Everything a worker needs besides its tile group; small and picklable."""

    source: MapSource
    staging: str  # folder of {z}/{x}/{y}.{ext}
    format: str
    tile_size: int
    quality: int


def _write(job: TileJob, z: int, x: int, y: int, rgba: np.ndarray) -> int:
    return folder.write_tile(job.staging, Tile(z, x, y, encode_tile(rgba, job.format, job.quality)), job.format)


def render_group(job: TileJob, zoom: int, tiles: tuple[tuple[int, int], ...]) -> tuple[list[tuple[int, int]], int]:
    """Warp one meta-tile window at ``zoom`` and write its non-empty tiles; return (written, bytes)."""
    import mercantile
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_bounds
    from rasterio.vrt import WarpedVRT

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
    with rasterio.open(src_info.path) as src, WarpedVRT(src, **vrt_opts) as vrt:
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


# ---- output ---------------------------------------------------------------------------------


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# ---- the public entry point -----------------------------------------------------------------
def build_pyramid(
    map_path: str | Path,
    out: Path,
    config: PyramidConfig,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    on_progress: ProgressFn | None = None,
) -> PyramidResult:
    """Cut ``map_path`` into a Web-Mercator pyramid at ``out`` (folder, ``.pmtiles`` or ``.mbtiles``).

    ``scheduler="sync"`` runs in this process; ``None`` starts a local Dask cluster of
    ``workers`` processes; anything else is a scheduler address or scheduler file.
    ``on_progress("tiles zN", done, total)`` counts candidate tiles (written or empty).
    """
    t0 = time.perf_counter()
    out = Path(out)
    src = inspect_map(map_path)
    from geopix.source import url_of

    shown = url_of(src.path)  # for messages: a URL as typed, credentials redacted
    file_name = src.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    kind = output_kind(out)
    if config.format == "jpg" and has_invalid_pixels(src):
        raise TileFormatError(
            f"--format jpg has no transparency, but {shown} has masked (nodata) pixels; use png or webp"
        )
    minz, maxz = zoom_range(src, config)
    check_output(out.parent, [out.name], config.overwrite, option="OUT")
    partial = out.with_name(out.name + ".partial")
    staging = partial if kind == "dir" else out.with_name(out.name + ".partial.d")
    for p in {partial, staging}:
        _remove(p)
    staging.mkdir(parents=True)
    job = TileJob(src, str(staging), config.format, config.tile_size, config.quality)
    counts: dict[int, int] = {}
    total_bytes = 0

    def candidates(z: int) -> int:
        x0, y0, x1, y1 = tile_range(src.bounds, z)
        return (x1 - x0 + 1) * (y1 - y0 + 1)

    total, done = sum(candidates(z) for z in range(minz, maxz + 1)), [0]

    def advance(n: int, z: int) -> None:
        done[0] += n
        if on_progress is not None:
            on_progress(f"tiles z{z}", done[0], total)

    try:
        with open_cluster(scheduler, workers) as client:
            written_above: set[tuple[int, int]] = set()
            for z in range(maxz, minz - 1, -1):
                written: set[tuple[int, int]] = set()
                nbytes = [0]

                def on_done(group, got, z=z, written=written, nbytes=nbytes) -> None:
                    written.update(got[0])
                    nbytes[0] += got[1]
                    advance(len(group), z)

                if z == maxz:
                    groups: Iterable = meta_groups(src.bounds, z, config.meta_level)
                    run_tasks(render_group, (job, z), groups, on_done, client, label=f"tiles-z{z}")
                else:
                    parents = sorted({(x // 2, y // 2) for x, y in written_above}, key=lambda p: (p[1], p[0]))
                    groups = _group_by_ancestor(parents, config.meta_level)
                    run_tasks(reduce_group, (job, z), groups, on_done, client, label=f"tiles-z{z}")
                    advance(candidates(z) - len(parents), z)
                counts[z] = len(written)
                total_bytes += nbytes[0]
                written_above = written
                if z == maxz and not written:
                    raise EmptyRasterError(f"{shown} has no valid pixels at zoom {z}; nothing to tile")
    except BaseException:
        _remove(staging)
        raise

    tj = make_tilejson(
        name=config.name or Path(file_name).stem,
        tiles_url=tiles_template(config.base_url, config.format) if config.base_url else "{z}/{x}/{y}." + config.format,
        bounds=src.bounds,
        minzoom=minz,
        maxzoom=maxz,
        attribution=attribution_for(src.tags, src.path, config.attribution),
        tile_size=config.tile_size,
        fmt=config.format,
        description=f"geopix web tiles of {file_name}",
    )
    try:
        if kind == "dir":
            folder.write_tilejson(staging, tj)
        else:
            WRITERS[kind](partial, folder.iter_tiles(staging, range(minz, maxz + 1), config.format), tj)
            _remove(staging)
        _remove(out)
        partial.replace(out)
    except BaseException:
        _remove(staging)
        _remove(partial)
        raise
    return PyramidResult(
        path=out,
        kind=kind,
        format=config.format,
        tile_size=config.tile_size,
        minzoom=minz,
        maxzoom=maxz,
        bounds=src.bounds,
        tiles_per_zoom=dict(sorted(counts.items())),
        bytes=total_bytes,
        seconds=time.perf_counter() - t0,
        tilejson=tj,
    )


def _group_by_ancestor(tiles: list[tuple[int, int]], level: int) -> Iterator[tuple[tuple[int, int], ...]]:
    """Consecutive runs of ``tiles`` sharing an ancestor ``level`` zooms up (input sorted by row)."""
    k = 2**level
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for x, y in tiles:
        groups.setdefault((x // k, y // k), []).append((x, y))
    for key in sorted(groups, key=lambda p: (p[1], p[0])):
        yield tuple(groups[key])
