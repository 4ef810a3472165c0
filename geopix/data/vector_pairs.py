"""Cut an aerial raster and its vector labels into training pairs at the model's ground resolution.

The work grid is the render's (``read.work_grid`` at the model's metres per pixel, aligned to
the aerial), and the aerial is read as render reads it (average resampling, the model's
colour matching), so a pair shows the model exactly what a render will.  Each tile writes
``A/NAME.png`` (aerial), ``B/NAME.png`` (the style's drawing of the labels, for people and
the RGB head) and ``M/NAME.png`` (the per-pixel allowed-class bit mask of
:mod:`geopix.data.rasterize`; 0 = unknown).  Tiles reaching past the raster are reflect-padded
(as render pads) and unknown there.  Everything is written to ``OUT.partial`` and renamed.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from geopix.config import VectorPairsConfig, resolve_config
from geopix.data.pair_writer import PairWriter
from geopix.data.rasterize import rasterize_labels
from geopix.data.vectors import LayerSpec, layer_specs, read_layers
from geopix.errors import DatasetError
from geopix.read import RasterInfo, colour_match, inspect_raster, to_unit, work_grid

log = logging.getLogger(__name__)


@dataclass
class VectorPairsResult:
    out: Path
    pairs: int
    resolution_m: float
    known_share: float  # of the written tiles' pixels
    class_pixels: dict[str, int]
    covers: list[str]
    warnings: list[str] = field(default_factory=list)
    rasters: list[str] = field(default_factory=list)


def read_work(info: RasterInfo, grid) -> tuple[np.ndarray, np.ndarray]:
    """The aerial on the work grid as render's reader sees it: (H, W, 3) uint8 and (H, W) validity."""
    with rasterio.open(info.path) as src, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with WarpedVRT(
            src,
            crs=src.crs,
            transform=grid.transform(info),
            width=grid.width,
            height=grid.height,
            resampling=Resampling.average if grid.width < src.width else Resampling.bilinear,
        ) as vrt:
            data = vrt.read(list(info.bands))
            valid = vrt.dataset_mask() > 0
    a = np.clip(np.rint((to_unit(data, info) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return a.transpose(1, 2, 0), valid


def features_for(
    raster: str | Path,
    layers: list[LayerSpec],
    resolution_m: float | None,
    *,
    value_map: dict[str, str] | None = None,
    covers: frozenset[str] | None = None,
    bands: tuple[int, ...] | None = None,
):
    """(RasterInfo, work grid, Features, ReadStats): ``raster`` checked, its grid at ``resolution_m``
    (None: native), and ``layers`` read into its CRS."""
    info = inspect_raster(raster, bands)
    grid = work_grid(info, resolution_m, resample=resolution_m is not None)
    features, stats = read_layers(layers, CRS.from_wkt(info.crs), info.bounds, value_map, covers)
    return info, grid, features, stats


def make_vector_pairs(config: VectorPairsConfig | None = None, /, **kwargs) -> VectorPairsResult:
    """Write ``out_dir/{A,B,M}/NAME.png`` pairs for every raster (see the module docstring).

    Also callable as ``make_vector_pairs(rasters=[...], layers=["roads.gpkg:kind"], out_dir="pairs")``
    (``layers`` as typed after ``--layer``; parsed ``LayerSpec`` objects pass as they are)."""
    from geopix.models.registry import load_model

    config = resolve_config(VectorPairsConfig, config, kwargs, "make_vector_pairs")
    rasters, layers = config.rasters, layer_specs(config.layers)
    writer = PairWriter(config.out_dir, tile=config.tile, stride=config.step, overwrite=config.overwrite)
    spec = load_model(config.model).spec
    res = spec.ground_resolution_m if config.resolution_m is None else config.resolution_m
    all_warnings: list[str] = []
    used_covers: set[str] = set()
    with writer:
        for raster in rasters:
            info, grid, features, stats = features_for(
                raster, layers, res, value_map=config.value_map, covers=config.covers, bands=config.bands
            )
            if config.match_colors and spec.input_stats:
                info = colour_match(info, spec.input_stats)
            all_warnings += [f"{Path(raster).name}: {w}" for w in stats.warnings()]
            used_covers |= features.covers
            a, valid = read_work(info, grid)
            labels = rasterize_labels(features, grid.transform(info), (grid.height, grid.width), valid)
            writer.add_raster(writer.stem_for(raster), a, labels)
        if writer.pairs == 0:
            raise DatasetError(f"no tile of {', '.join(map(str, rasters))} has a known label pixel; check the layers")
        result = VectorPairsResult(
            out=writer.out,
            pairs=writer.pairs,
            resolution_m=float(res),
            known_share=writer.known_share,
            class_pixels=writer.class_pixels(),
            covers=sorted(used_covers),
            warnings=all_warnings,
            rasters=[str(r) for r in rasters],
        )
        writer.publish(
            {
                **asdict(result),
                "out": str(writer.out),
                "layers": [str(s.path) for s in layers],
                "model": str(config.model),
            }
        )
    return result
