"""Open and check input rasters; windowed reads on the work grid, with reflected edges.

``inspect_raster`` validates a file once on the client and returns a small frozen
``RasterInfo`` that travels to the workers; ``WorkReader`` (opened inside a worker) reads
any window of the work grid, including windows that reach past the raster edge.

Input scaling (the model expects 8-bit RGB mapped to [-1, 1]):

* ``uint8``: ``x / 127.5 - 1``.
* ``uint16``: each band is stretched linearly from its 2nd to its 98th percentile (over
  valid pixels of a ≤1024 px overview of the *whole* raster, computed once) onto 0..255,
  then treated as uint8.  One global stretch keeps the mapping the same for every tile.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.enums import Resampling as RioResampling
from rasterio.errors import RasterioIOError
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window as RioWindow

from geopix.errors import (
    BandError,
    DtypeError,
    EmptyRasterError,
    InputNotFoundError,
    MissingCRSError,
    NotARasterError,
)
from geopix.plan import Window
from geopix.remote import probe_read, remote_error
from geopix.source import VRT_PREFIX, gdal_name, is_remote, url_of

SUPPORTED_DTYPES = ("uint8", "uint16")


@dataclass(frozen=True, slots=True)
class RasterInfo:
    """What geopix needs to know about an input raster; small and picklable."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: str | None  # WKT
    transform: tuple[float, ...]  # affine a, b, c, d, e, f
    nodata: float | None
    bands: tuple[int, ...]  # 1-based bands fed to the model
    alpha: int | None  # 1-based alpha band, if any
    res_m: tuple[float, float] | None  # ground resolution (x, y) in metres per pixel
    stretch: tuple[tuple[float, float], ...] | None = None  # uint16: (lo, hi) per band
    colour: tuple[tuple[float, float], ...] | None = None  # per band (gain, bias) after the stretch
    crs_name: str = ""

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        a = self.affine
        xs = (a.c, a.c + a.a * self.width)
        ys = (a.f, a.f + a.e * self.height)
        return min(xs), min(ys), max(xs), max(ys)


def ground_resolution(src: rasterio.io.DatasetReader) -> tuple[float, float] | None:
    """Metres on the ground per pixel (x, y) at the raster's centre, for any CRS.

    The geodesic distance, on the CRS's own ellipsoid, from the centre pixel to its right and
    lower neighbours.  A projected CRS's map units are not ground metres: in Web Mercator a
    "metre" is 1/cos(latitude) of one (13 % off in Nepal, 2× at 60° N), and every projection
    has a scale factor that varies over it; geographic CRSs are handled the same way.
    """
    if src.crs is None:
        return None
    from pyproj import CRS, Geod, Transformer

    crs = CRS.from_wkt(src.crs.to_wkt())
    geodetic = crs.geodetic_crs or CRS.from_epsg(4326)
    geod = crs.get_geod() or Geod(ellps="WGS84")
    t = src.transform
    cx, cy = src.xy(src.height // 2, src.width // 2)
    xs = [cx, cx + t.a, cx + t.b]  # the centre, one column on, one row on
    ys = [cy, cy + t.d, cy + t.e]
    lon, lat = Transformer.from_crs(crs, geodetic, always_xy=True).transform(xs, ys)
    _, _, dx = geod.inv(lon[0], lat[0], lon[1], lat[1])
    _, _, dy = geod.inv(lon[0], lat[0], lon[2], lat[2])
    return float(dx), float(dy)


def _default_bands(src: rasterio.io.DatasetReader) -> tuple[tuple[int, ...], int | None]:
    interp = list(src.colorinterp)
    alpha = interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else None
    rgb = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    if all(c in interp for c in rgb):
        return tuple(interp.index(c) + 1 for c in rgb), alpha
    non_alpha = [b for b in range(1, src.count + 1) if b != alpha]
    if len(non_alpha) == 3:
        return tuple(non_alpha), alpha
    raise BandError(
        f"{src.name} has {src.count} bands ({', '.join(c.name for c in interp)}) and no clear RGB; "
        "pass --bands R,G,B (1-based band numbers, e.g. --bands 4,3,2)"
    )


def open_raster(path: str | Path, role: str = "raster") -> rasterio.io.DatasetReader:
    """Open a local path or GDAL name (``/vsicurl/…``, ``/vsis3/…``, VRT XML) for reading, or
    raise the error that names what is wrong with it (never a credential)."""
    name = str(path)
    if not name.startswith(("/vsi", VRT_PREFIX)):
        local = Path(name)
        if not local.exists():
            raise InputNotFoundError(f"{role} {local} does not exist; check the path")
        if local.is_dir():
            raise NotARasterError(f"{role} {local} is a directory; pass a GeoTIFF file")
    try:
        return rasterio.open(name)
    except RasterioIOError as exc:
        if is_remote(name):
            raise remote_error(exc, name, role) from exc
        raise NotARasterError(
            f"{role} {url_of(name)} is not a raster GDAL can read ({str(exc).splitlines()[0]}); pass a GeoTIFF"
        ) from exc


def inspect_raster(path: str | Path, bands: tuple[int, ...] | None = None, allow_no_crs: bool = False) -> RasterInfo:
    """Open ``path`` and check everything a render needs; raise a ``GeopixError`` naming the fix."""
    name = path if isinstance(path, str) and path.startswith(("/vsi", VRT_PREFIX)) else gdal_name(str(path))
    path = url_of(name)  # what messages show
    with open_raster(name, "input raster") as src:
        if src.width < 1 or src.height < 1 or src.count < 1:
            raise EmptyRasterError(f"{path} is empty ({src.width}×{src.height}, {src.count} bands)")
        if src.crs is None and src.gcps[0]:
            # --allow-no-crs would silently drop the ground control points: never do that.
            gcp_crs = src.gcps[1].to_string() if src.gcps[1] else "no CRS"
            raise MissingCRSError(
                f"{path} is georeferenced by {len(src.gcps[0])} ground control points ({gcp_crs}), not by a "
                f"geotransform; warp it onto a grid first: gdalwarp -r bilinear {path} warped.tif, then render "
                "warped.tif"
            )
        if src.crs is None and not allow_no_crs:
            raise MissingCRSError(
                f"{path} has no CRS, so the output could not be georeferenced; assign one "
                "(gdal_edit.py -a_srs EPSG:XXXX) or pass --allow-no-crs"
            )
        if bands is None:
            bands, alpha = _default_bands(src)
        else:
            alpha = next((i + 1 for i, c in enumerate(src.colorinterp) if c == ColorInterp.alpha), None)
            bad = [b for b in bands if not 1 <= b <= src.count]
            if bad:
                raise BandError(f"--bands {','.join(map(str, bands))}: {path} has bands 1..{src.count} only")
        if len(bands) != 3:
            raise BandError(f"--bands must name 3 bands (R,G,B) for an RGB model, got {len(bands)}: {bands}")
        dtype = src.dtypes[bands[0] - 1]
        if any(src.dtypes[b - 1] != dtype for b in bands) or dtype not in SUPPORTED_DTYPES:
            raise DtypeError(
                f"{path} has band types {src.dtypes}; geopix reads {' or '.join(SUPPORTED_DTYPES)} "
                "(convert first, e.g. gdal_translate -ot Byte -scale)"
            )
        stretch = _percentile_stretch(src, bands) if dtype == "uint16" else None
        return RasterInfo(
            path=name if is_remote(name) or name.startswith(VRT_PREFIX) else str(Path(name).resolve()),
            width=src.width,
            height=src.height,
            count=src.count,
            dtype=dtype,
            crs=src.crs.to_wkt() if src.crs else None,
            crs_name=src.crs.to_string() if src.crs else "",
            transform=tuple(src.transform)[:6],
            nodata=src.nodata,
            bands=tuple(bands),
            alpha=alpha,
            res_m=ground_resolution(src),
            stretch=stretch,
        )


@contextlib.contextmanager
def damaged_is_an_error(path: str | Path, what: str = "") -> Iterator[None]:
    """Turn GDAL's "Read failed" on a damaged or truncated file into a ``NotARasterError`` naming it.

    For a remote raster the server is asked first (``remote.probe_read``): a timeout or an HTTP
    5xx is reported as such (exit 46), not as damage to the file.
    """
    try:
        yield
    except (RasterioIOError, CPLE_BaseError) as exc:
        if is_remote(str(path)):
            diagnosis = probe_read(str(path))
            if diagnosis is not None:
                raise diagnosis from None
        cause = exc.__cause__ or exc.__context__ or exc
        detail = str(cause).splitlines()[0][:200] if str(cause) else type(cause).__name__
        raise NotARasterError(
            f"{url_of(str(path))} cannot be read{what} ({detail}): the file is damaged or truncated; download or "
            "export it again (gdalinfo -checksum shows where it breaks)"
        ) from None  # GDAL's exceptions do not survive the trip from a worker; the message has the cause


def _overview(
    src: rasterio.io.DatasetReader,
    bands: tuple[int, ...],
    resampling: RioResampling,
    stop: threading.Event | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The whole raster at ≤1024 px a side, and its valid mask: statistics that hold for every tile.

    ``stop``: once set, the read ends at the next cell (``InterruptedError``)."""
    f = max(1, math.ceil(max(src.width, src.height) / 1024))
    shape = (max(1, src.height // f), max(1, src.width // f))
    with damaged_is_an_error(src.name):
        data = np.empty((len(bands), *shape), dtype=src.dtypes[bands[0] - 1])
        valid = np.empty(shape, dtype=bool)
        for rows, cols in _overview_cells(src, bands, shape):
            if stop is not None and stop.is_set():
                raise InterruptedError(f"the overview read of {src.name} was stopped")
            win = RioWindow(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
            at = (_scaled(rows, shape[0], src.height), _scaled(cols, shape[1], src.width))
            out = (at[0].stop - at[0].start, at[1].stop - at[1].start)
            data[(slice(None), *at)] = src.read(
                list(bands), window=win, out_shape=(len(bands), *out), resampling=resampling
            )
            valid[at] = src.dataset_mask(window=win, out_shape=out, resampling=RioResampling.nearest) > 0
    return data, valid


def _scaled(span: range, n: int, size: int) -> slice:
    """The overview's pixels (``n`` of them along a ``size``-pixel axis) that ``span`` covers."""
    return slice(span.start * n // size, span.stop * n // size)


#: Source pixels a side of one read of ``_overview`` (rounded to whole output pixels).
OVERVIEW_CELL = 1024


def _overview_cells(
    src: rasterio.io.DatasetReader, bands: tuple[int, ...], shape: tuple[int, int]
) -> Iterator[tuple[range, range]]:
    """The source windows ``_overview`` reads, each ``(rows, cols)``.

    One resampled read of the whole raster goes band by band over all of it: GDAL's 64 MB block
    cache (``process.GDAL_CACHE_MB``) then holds less than a band, and each pixel-interleaved tile
    is decoded once per band (8192², 3 bands: 1.6 s against 0.64 s in cells).  Along an axis whose
    size is a whole multiple of the overview's, cells starting on whole output pixels give each
    output pixel the same source footprint as one read (tests/test_read.py); along another axis,
    or from a raster's own overviews (GDAL picks a level per read), that axis is read whole.
    """
    exact = not any(src.overviews(b) for b in bands)

    def step(size: int, n: int) -> int:  # source pixels per cell along an axis of ``n`` overview pixels
        ratio = size // n
        return ratio * max(1, OVERVIEW_CELL // ratio) if exact and ratio * n == size else size

    step_y, step_x = step(src.height, shape[0]), step(src.width, shape[1])
    for r in range(0, src.height, step_y):
        for c in range(0, src.width, step_x):
            yield range(r, min(r + step_y, src.height)), range(c, min(c + step_x, src.width))


def _percentile_stretch(src: rasterio.io.DatasetReader, bands: tuple[int, ...]) -> tuple[tuple[float, float], ...]:
    data, valid = _overview(src, bands, RioResampling.nearest)
    out = []
    for band in data:
        v = band[valid] if valid.any() else band.ravel()  # at least the overview's one pixel
        lo, hi = np.percentile(v, [2, 98])
        out.append((float(lo), float(max(hi, lo + 1))))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class WorkGrid:
    """The grid the model runs on: the raster's extent at ``height × width`` pixels."""

    height: int
    width: int

    def transform(self, info: RasterInfo) -> Affine:
        return info.affine @ Affine.scale(info.width / self.width, info.height / self.height)


def work_grid(info: RasterInfo, model_res_m: float | None, resample: bool) -> WorkGrid:
    """Same extent, pixels of ``model_res_m`` metres (per axis) when resampling is on."""
    if not resample or model_res_m is None or info.res_m is None:
        return WorkGrid(info.height, info.width)
    fx, fy = info.res_m[0] / model_res_m, info.res_m[1] / model_res_m
    return WorkGrid(max(1, round(info.height * fy)), max(1, round(info.width * fx)))


def to_unit(data: np.ndarray, info: RasterInfo | None = None) -> np.ndarray:
    """Raw band values ``(bands, h, w)`` → float32 in [-1, 1] (the rule in the module docstring);
    without ``info``, 8-bit values with no stretch or colour match (training images, plain images).

    8-bit input goes through a 256-entry table per band, built by this same rule, so the
    values are identical and a block costs one lookup instead of five float passes.
    """
    if data.dtype == np.uint8 and data.ndim == 3 and data.size > 3 * 256:
        lut = _to_unit_formula(np.broadcast_to(np.arange(256, dtype=np.uint8), (data.shape[0], 1, 256)), info)
        out = np.empty(data.shape, np.float32)
        for b in range(data.shape[0]):
            # 8-bit values index the 256 entries: "wrap" never wraps, it only skips the bounds
            # check of the default "raise" (a 1088² band: 1.4 → 0.8 ms).
            np.take(lut[b, 0], data[b], out=out[b], mode="wrap")
        return out
    return _to_unit_formula(data, info)


def _to_unit_formula(data: np.ndarray, info: RasterInfo | None) -> np.ndarray:
    x = data.astype(np.float32)
    if info is None:
        return x / 127.5 - 1.0
    if info.stretch is not None:
        lo = np.array([s[0] for s in info.stretch], dtype=np.float32)[:, None, None]
        hi = np.array([s[1] for s in info.stretch], dtype=np.float32)[:, None, None]
        x = np.clip((x - lo) / (hi - lo), 0.0, 1.0) * 255.0
        x = np.rint(x)
    if info.colour is not None:
        gain = np.array([c[0] for c in info.colour], dtype=np.float32)[:, None, None]
        bias = np.array([c[1] for c in info.colour], dtype=np.float32)[:, None, None]
        x = np.clip(x * gain + bias, 0.0, 255.0)
    return x / 127.5 - 1.0


def colour_match(
    info: RasterInfo, target: tuple[tuple[float, float], ...], statistics: tuple[tuple[float, float], ...] | None = None
) -> RasterInfo:
    """Return ``info`` with a per-band affine map that gives the raster the training inputs'
    mean and standard deviation.

    ``statistics``: the raster's own (:func:`colour_statistics`), when already read.  They come
    from valid pixels of a ≤1024 px overview of the whole raster, computed once, so every tile
    gets the same mapping (inference stays a pure function of the pixels).  Measured on Vienna
    (mean 127 vs 61 in the maps dataset): without it the model painted dark gardens as water.
    """
    out = []
    for (s_mean, s_std), (t_mean, t_std) in zip(statistics or colour_statistics(info), target, strict=True):
        gain = t_std / s_std if s_std > 1e-3 else 1.0
        out.append((round(gain, 6), round(t_mean - gain * s_mean, 6)))
    from dataclasses import replace

    return replace(info, colour=tuple(out))


def colour_statistics(info: RasterInfo, stop: threading.Event | None = None) -> tuple[tuple[float, float], ...]:
    """Per band, the mean and standard deviation of the valid pixels of a ≤1024 px overview of
    the raster, in 0..255 after the stretch: what :func:`colour_match` matches to the model's.
    ``stop``: see :func:`_overview` (a render that fails meanwhile does not wait for the read)."""
    with rasterio.open(info.path) as src:
        data, valid = _overview(src, info.bands, RioResampling.average, stop)
    x = to_unit(data, info) * 127.5 + 127.5  # the stretch (uint16) first, 0..255
    pix = x[:, valid] if valid.any() else x.reshape(3, -1)
    return tuple((float(band.mean()), float(band.std())) for band in pix)


def reflect_index(start: int, stop: int, n: int) -> np.ndarray:
    """Indices ``start..stop`` folded into ``0..n-1`` as ``np.pad(mode="reflect")`` of the *whole*
    axis would (edge-repeat for n = 1).  Past-edge pixels then depend only on the raster, not on
    which window is read: a tile reaching past the edge gets the same pixels whichever block reads
    it (padding a small window by more than it holds bounces back and forth inside the window)."""
    idx = np.arange(start, stop, dtype=np.int64)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m < n, m, period - m)


class WorkReader:
    """Reads windows of the work grid (resampled through a ``WarpedVRT`` when needed)."""

    def __init__(self, info: RasterInfo, grid: WorkGrid) -> None:
        self.info = info
        self.grid = grid
        self._src = rasterio.open(info.path)
        self._vrt = None
        self._ds = self._src
        #: Source pixels per work-grid pixel, when a decimating read replaces the warp.
        self._scale: tuple[float, float] | None = None
        if (grid.height, grid.width) != (info.height, info.width):
            downsampling = grid.width < info.width
            if downsampling and WARP_FREE_READS and _all_valid(self._src, info.bands):
                # GDAL's own averaging read of each pixel's exact source footprint: the warper's
                # average within one level (tests/test_read.py), twice as fast (a 1088² block of
                # a 0.3 m raster at 1 m: 0.23 s against 0.46, decoding included; 0.04 against
                # 0.33 once decoded).  The work grid covers the raster's extent exactly, so the
                # footprint is a scale.
                self._scale = (info.width / grid.width, info.height / grid.height)
                return
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._vrt = WarpedVRT(
                    self._src,
                    crs=self._src.crs,
                    transform=grid.transform(info),
                    width=grid.width,
                    height=grid.height,
                    resampling=RioResampling.average if downsampling else RioResampling.bilinear,
                )
            self._ds = self._vrt

    def __enter__(self) -> WorkReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._vrt is not None:
            self._vrt.close()
        self._src.close()

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(values ``(3, h, w)`` in [-1, 1], valid ``(h, w)`` bool) for any work-grid window."""
        rows = reflect_index(window.row, window.row_stop, self.grid.height)
        cols = reflect_index(window.col, window.col_stop, self.grid.width)
        r0, c0 = int(rows.min()), int(cols.min())
        inside = Window(r0, c0, int(rows.max()) + 1 - r0, int(cols.max()) + 1 - c0)
        rw = RioWindow(inside.col, inside.row, inside.width, inside.height)
        with damaged_is_an_error(self.info.path, f" at work-grid window {inside}"):
            if self._scale is not None:
                data, valid = self._decimated(inside)
            else:
                data = self._ds.read(list(self.info.bands), window=rw)
                valid = self._ds.dataset_mask(window=rw) > 0
        if inside != window:  # the window reaches past an edge: fold it back
            data = data[:, rows - r0][:, :, cols - c0]
            valid = valid[rows - r0][:, cols - c0]
        return to_unit(data, self.info), valid

    def _decimated(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """``window`` of the work grid averaged from its source footprint (every pixel valid).

        GDAL computes a fractional footprint's weights relative to the window it is asked
        for, so one pixel read inside two windows could differ by one level: each pixel is
        read inside its fixed ``DECIMATE_CELL``² cell of the grid, whichever window asks."""
        sx, sy = self._scale
        bands, cell, grid = list(self.info.bands), DECIMATE_CELL, self.grid
        out = np.empty((len(bands), window.height, window.width), dtype=self._src.dtypes[bands[0] - 1])
        for r in range(window.row // cell * cell, window.row_stop, cell):
            for c in range(window.col // cell * cell, window.col_stop, cell):
                h, w = min(cell, grid.height - r), min(cell, grid.width - c)
                footprint = RioWindow(c * sx, r * sy, w * sx, h * sy)
                part = self._src.read(bands, window=footprint, out_shape=(len(bands), h, w), resampling=_AVERAGE)
                here = (whole := Window(r, c, h, w)).intersection(window)
                out[(slice(None), *here.relative_to(window))] = part[(slice(None), *here.relative_to(whole))]
        return out, np.ones(out.shape[1:], dtype=bool)


_AVERAGE = RioResampling.average
#: Side of the work-grid cells a decimating read is done in (``WorkReader._decimated``): per
#: 1088² block of a 0.3 m raster at 1 m, 0.31 s at 64 (more calls), 0.23 at 128, 0.28 at 256
#: (more pixels read past the block's edges).
DECIMATE_CELL = 128
#: Downsampled reads of an all-valid raster skip the warper (``WorkReader``); off, they warp.
WARP_FREE_READS = True


def _all_valid(src: rasterio.io.DatasetReader, bands: tuple[int, ...]) -> bool:
    """No nodata value, mask or alpha band: every source pixel is valid."""
    flags = src.mask_flag_enums
    return all(flags[b - 1] == [MaskFlags.all_valid] for b in bands)


def read_source_mask(info: RasterInfo, window: Window) -> np.ndarray:
    """Valid-data mask of the *source* over a window of the source grid."""
    with rasterio.open(info.path) as src:
        rw = RioWindow(window.col, window.row, window.width, window.height)
        with damaged_is_an_error(info.path, f" at window {window}"):
            return src.dataset_mask(window=rw) > 0
