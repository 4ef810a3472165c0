"""The area of interest: a GeoJSON outline, as an output window for the plan and a mask per block.

The client reprojects the AOI onto the raster once (``aoi_window``: the output window to
render and the clipped outline as WKB); each worker rasterises the outline over its own
block (``aoi_mask``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from geopix.errors import AOIError, InputNotFoundError
from geopix.plan import Window
from geopix.read import RasterInfo


def aoi_window(aoi_path: Path, info: RasterInfo, out_transform, out_h: int, out_w: int) -> tuple[Window, bytes]:
    """Read a GeoJSON AOI (any CRS), reproject it onto the raster, return its output window."""
    import shapely
    from pyproj import CRS, Transformer
    from rasterio.windows import from_bounds
    from shapely import ops
    from shapely.geometry import box, shape

    if not aoi_path.exists():
        raise InputNotFoundError(f"--aoi {aoi_path} does not exist")
    try:
        doc = json.loads(aoi_path.read_text())
    except (OSError, ValueError) as exc:
        raise AOIError(f"--aoi {aoi_path} is not valid GeoJSON ({exc})") from exc
    feats = doc.get("features") if doc.get("type") == "FeatureCollection" else [doc]
    geoms = [shape(f.get("geometry", f)) for f in feats]
    if not geoms:
        raise AOIError(f"--aoi {aoi_path} holds no geometry")
    geom = ops.unary_union(geoms)
    src_crs = CRS.from_user_input(doc.get("crs", {}).get("properties", {}).get("name", "EPSG:4326"))
    if info.crs is None:
        raise AOIError("--aoi needs a georeferenced raster; this one has no CRS")
    dst_crs = CRS.from_wkt(info.crs)
    if not src_crs.equals(dst_crs):
        tr = Transformer.from_crs(src_crs, dst_crs, always_xy=True)
        geom = shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    raster_box = box(*info.bounds)
    clipped = geom.intersection(raster_box)
    if clipped.is_empty:
        raise AOIError(
            f"--aoi {aoi_path} does not overlap the raster (raster bounds {tuple(round(v, 3) for v in info.bounds)} "
            f"in {info.crs_name}); check the AOI's CRS and coordinates"
        )
    win = from_bounds(*clipped.bounds, transform=out_transform)
    eps = 1e-6  # bounds on pixel edges must not pull in the next pixel
    r0, c0 = max(0, math.floor(win.row_off + eps)), max(0, math.floor(win.col_off + eps))
    r1 = min(out_h, math.ceil(win.row_off + win.height - eps))
    c1 = min(out_w, math.ceil(win.col_off + win.width - eps))
    return Window(r0, c0, r1 - r0, c1 - c0), clipped.wkb


def aoi_mask(aoi_wkb: bytes, out_transform: tuple[float, ...], window: Window) -> np.ndarray:
    """Which pixels of ``window`` (output grid) lie inside the AOI: the block's mask, on a worker."""
    from rasterio.features import geometry_mask
    from rasterio.transform import Affine
    from rasterio.windows import Window as RioWindow
    from rasterio.windows import transform as window_transform
    from shapely import wkb

    geom = wkb.loads(aoi_wkb)
    tr = window_transform(RioWindow(window.col, window.row, window.width, window.height), Affine(*out_transform))
    return geometry_mask([geom], out_shape=(window.height, window.width), transform=tr, invert=True)
