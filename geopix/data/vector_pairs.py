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

import json
import logging
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from geopix import style
from geopix.config import VectorPairsConfig, resolve_config
from geopix.data.rasterize import ALL_CLASSES, Labels, rasterize_labels
from geopix.data.vectors import LayerSpec, layer_specs, read_layers
from geopix.errors import DatasetError, OutputExistsError
from geopix.read import RasterInfo, colour_match, inspect_raster, to_unit, work_grid

log = logging.getLogger(__name__)
MASK_DIR = "M"
MANIFEST = "dataset.json"


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


def _offsets(n: int, tile: int, stride: int) -> list[int]:
    """Tile origins covering 0..n: every ``stride``, the last one flush with the end."""
    if n <= tile:
        return [0]
    out = list(range(0, n - tile + 1, stride))
    if out[-1] != n - tile:
        out.append(n - tile)
    return out


def _read_work(info: RasterInfo, grid) -> tuple[np.ndarray, np.ndarray]:
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
    rasters, layers, tile, stride = config.rasters, layer_specs(config.layers), config.tile, config.step
    out = Path(config.out_dir)
    if out.exists() and not config.overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite or choose another folder")
    spec = load_model(config.model).spec
    res = spec.ground_resolution_m if config.resolution_m is None else config.resolution_m
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for d in ("A", "B", MASK_DIR):
        (partial / d).mkdir(parents=True)
    written, known, total = 0, 0, 0
    counts = np.zeros(len(style.CLASSES), np.int64)
    all_warnings: list[str] = []
    used_covers: set[str] = set()
    stems: set[str] = set()
    try:
        for raster in rasters:
            info, grid, features, stats = features_for(
                raster, layers, res, value_map=config.value_map, covers=config.covers, bands=config.bands
            )
            if config.match_colors and spec.input_stats:
                info = colour_match(info, spec.input_stats)
            all_warnings += [f"{Path(raster).name}: {w}" for w in stats.warnings()]
            used_covers |= features.covers
            a, valid = _read_work(info, grid)
            labels = rasterize_labels(features, grid.transform(info), (grid.height, grid.width), valid)
            stem = (
                Path(raster).stem
                if Path(raster).stem not in stems
                else f"{Path(raster).parent.name}_{Path(raster).stem}"
            )
            stems.add(stem)
            for top in _offsets(grid.height, tile, stride):
                for left in _offsets(grid.width, tile, stride):
                    n = _write_tile(partial, f"{stem}_{top:06d}_{left:06d}", a, labels, top, left, tile)
                    if n:
                        written += 1
                        known += n
                        total += tile * tile
                        sl = (slice(top, top + tile), slice(left, left + tile))
                        counts += np.bincount(labels.top[sl][labels.known()[sl]], minlength=len(style.CLASSES))
        if written == 0:
            raise DatasetError(f"no tile of {', '.join(map(str, rasters))} has a known label pixel; check the layers")
        result = VectorPairsResult(
            out=out,
            pairs=written,
            resolution_m=float(res),
            known_share=known / total,
            class_pixels={c.name: int(n) for c, n in zip(style.CLASSES, counts, strict=True)},
            covers=sorted(used_covers),
            warnings=all_warnings,
            rasters=[str(r) for r in rasters],
        )
        manifest = {
            **asdict(result),
            "out": str(out),
            "layers": [str(s.path) for s in layers],
            "model": str(config.model),
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
        return result
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _pad(arr: np.ndarray, tile: int, mode: str) -> np.ndarray:
    ph, pw = tile - arr.shape[0], tile - arr.shape[1]
    if ph <= 0 and pw <= 0:
        return arr
    pads = [(0, max(ph, 0)), (0, max(pw, 0))] + [(0, 0)] * (arr.ndim - 2)
    if mode == "reflect" and min(arr.shape[:2]) > 1:
        return np.pad(arr, pads, mode="reflect")
    return np.pad(arr, pads, mode="edge" if mode == "reflect" else "constant")


def _write_tile(out: Path, name: str, a: np.ndarray, labels: Labels, top: int, left: int, tile: int) -> int:
    """Write one pair if it holds a known pixel; returns the count of known pixels (0: skipped)."""
    sl = (slice(top, top + tile), slice(left, left + tile))
    allowed = _pad(labels.allowed[sl], tile, "constant")
    n_known = int(((allowed != 0) & (allowed != ALL_CLASSES)).sum())
    if n_known == 0:
        return 0
    Image.fromarray(_pad(a[sl], tile, "reflect")).save(out / "A" / f"{name}.png")
    Image.fromarray(style.paint(_pad(labels.top[sl], tile, "constant"))).save(out / "B" / f"{name}.png")
    Image.fromarray(allowed).save(out / MASK_DIR / f"{name}.png")
    return n_known
