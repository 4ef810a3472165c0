"""Cut a co-registered aerial raster and map raster into aligned A/B training pairs.

The source (aerial) raster defines the grid: optionally resampled to ``resolution_m``
metres per pixel, then cut into ``tile``-pixel squares every ``stride`` pixels.  The target
(map) raster is reprojected onto exactly that grid through a ``WarpedVRT`` with nearest
resampling (maps are flat colours; interpolating would invent new ones), so the target may
be in any CRS.  A tile with any nodata, masked or uncovered pixel on either side is
skipped: a pair that is half empty would teach the network to draw emptiness.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geopix.config import CutConfig, resolve_config
from geopix.errors import DatasetError, DtypeError
from geopix.output import written_whole
from geopix.read import WorkGrid, inspect_raster, to_unit, work_grid


def _intersects(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _target_vrt_options(alpha: int | None, nodata: float | None) -> dict[str, object]:
    """Make pixels outside the target's footprint read as masked, whatever the target's masking."""
    if alpha is not None:
        return {"src_alpha": alpha}
    if nodata is not None:
        return {"nodata": nodata}
    return {"add_alpha": True}


def make_pairs(config: CutConfig | None = None, /, **kwargs) -> int:
    """Write ``out_dir/A/NAME.png`` (aerial) and ``out_dir/B/NAME.png`` (map) pairs; return how many.

    Also callable as ``make_pairs(source="aerial.tif", target="map.tif", out_dir="pairs")``."""
    config = resolve_config(CutConfig, config, kwargs, "make_pairs")
    source, target, tile, stride = config.source, config.target, config.tile, config.stride
    resolution_m = config.resolution_m
    src_info = inspect_raster(source)
    tgt_info = inspect_raster(target)
    if tgt_info.dtype != "uint8":
        raise DtypeError(f"map raster {target} is {tgt_info.dtype}; a map must be 8-bit RGB")
    if resolution_m is not None and src_info.res_m is None:
        raise DatasetError(f"cannot find the ground resolution of {source}; drop --resolution")
    grid = (
        work_grid(src_info, resolution_m, resample=True) if resolution_m else WorkGrid(src_info.height, src_info.width)
    )
    transform = grid.transform(src_info)
    if grid.height < tile or grid.width < tile:
        raise DatasetError(
            f"{source} is {grid.width}×{grid.height} px on the cutting grid, smaller than --tile {tile}; "
            "lower --tile or --resolution"
        )
    out = Path(config.out_dir)
    stem = Path(source).stem
    written = total = 0
    with rasterio.open(source) as src, rasterio.open(target) as tgt, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GDAL's notes on approximate transforms
        grid_bounds = rasterio.transform.array_bounds(grid.height, grid.width, transform)
        tgt_bounds = transform_bounds(tgt.crs, src.crs, *tgt.bounds, densify_pts=21)
        if not _intersects((grid_bounds[0], grid_bounds[1], grid_bounds[2], grid_bounds[3]), tgt_bounds):
            raise DatasetError(f"map {target} does not overlap aerial {source}; are they of the same place?")
        resampled = (grid.height, grid.width) != (src.height, src.width)
        a_ds = (
            WarpedVRT(
                src,
                crs=src.crs,
                transform=transform,
                width=grid.width,
                height=grid.height,
                resampling=Resampling.average if grid.width < src.width else Resampling.bilinear,
            )
            if resampled
            else src
        )
        b_ds = WarpedVRT(
            tgt,
            crs=src.crs,
            transform=transform,
            width=grid.width,
            height=grid.height,
            resampling=Resampling.nearest,
            **_target_vrt_options(tgt_info.alpha, tgt_info.nodata),
        )
        try:
            for top in range(0, grid.height - tile + 1, stride):
                for left in range(0, grid.width - tile + 1, stride):
                    total += 1
                    win = Window(left, top, tile, tile)
                    if not (a_ds.read_masks(list(src_info.bands), window=win) > 0).all():
                        continue
                    if not (b_ds.read_masks(list(tgt_info.bands), window=win) > 0).all():
                        continue
                    a = to_unit(a_ds.read(list(src_info.bands), window=win), src_info)
                    a = np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)
                    b = b_ds.read(list(tgt_info.bands), window=win)
                    name = f"{stem}_{top:06d}_{left:06d}.png"
                    if written == 0:
                        (out / "A").mkdir(parents=True, exist_ok=True)
                        (out / "B").mkdir(parents=True, exist_ok=True)
                    # B before A, each whole: an interrupted pair is a lone B, which find_pairs skips.
                    for side, img in (("B", b), ("A", a)):
                        with written_whole(out / side / name) as tmp:
                            Image.fromarray(img.transpose(1, 2, 0)).save(tmp, format="PNG")
                    written += 1
        finally:
            b_ds.close()
            if a_ds is not src:
                a_ds.close()
    if written == 0:
        raise DatasetError(
            f"all {total} tiles of {tile} px have nodata or lie outside the map; check the rasters' overlap "
            "or lower --tile"
        )
    return written
