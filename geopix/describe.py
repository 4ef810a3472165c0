"""Describe a raster and the render it would be: size, grids, tile count, and a time estimate
from the generator's rate measured on this machine."""

from __future__ import annotations

import math
import time
from pathlib import Path

from geopix.config import InferConfig, TileConfig
from geopix.errors import GeopixError
from geopix.models.checkpoint import LoadedModel, ModelSpec
from geopix.models.registry import load_model
from geopix.plan import RenderPlan
from geopix.read import inspect_raster, work_grid


def info(
    path: str | Path,
    model: str | None = "sat2map",
    tiles: TileConfig | None = None,
    bands: tuple[int, ...] | None = None,
    resample: bool = True,
    allow_no_crs: bool = True,
) -> dict:
    """Describe a raster and the render it would be (tiles, blocks, an estimated time)."""
    tiles = tiles or TileConfig()
    meta = inspect_raster(path, bands, allow_no_crs)
    spec: ModelSpec | None = None
    loaded: LoadedModel | None = None
    note = ""
    if model:
        try:
            loaded = load_model(model)
            spec = loaded.spec
        except GeopixError as exc:
            note = str(exc)
    res = spec.ground_resolution_m if spec else None
    grid = work_grid(meta, res, resample)
    plan = RenderPlan(
        meta.height, meta.width, grid.height, grid.width, tiles.tile_size, tiles.overlap, tiles.chunk_size
    )
    rate = generator_rate(loaded, tiles.tile_size) if loaded is not None else None
    out = {
        "path": meta.path,
        "size": [meta.width, meta.height],
        "bands": meta.count,
        "dtype": meta.dtype,
        "model_bands": list(meta.bands),
        "alpha_band": meta.alpha,
        "nodata": meta.nodata,
        "crs": meta.crs_name or None,
        "bounds": [round(v, 6) for v in meta.bounds],
        "ground_resolution_m": [round(v, 4) for v in meta.res_m] if meta.res_m else None,
        "model_ground_resolution_m": round(res, 4) if res else None,
        "work_grid": [grid.width, grid.height],
        "tiles": plan.n_tiles,
        "blocks": math.prod(plan.block_shape),
        "generator_tiles_per_second": round(rate, 1) if rate else None,
        "estimated_seconds": round(estimated_seconds(plan.n_tiles, rate), 1) if rate else None,
    }
    if note:
        out["model_note"] = note
    return out


#: What a render adds to the generator's own time (start, read/blend/write, finalize), from
#: benchmarks/README.md: start ≈ 2.5 s, then end-to-end ≈ 0.67 of the raw generator rate.
RENDER_START_S = 2.5
E2E_FRACTION_OF_RAW = 0.67


def generator_rate(model: LoadedModel, tile: int, infer: InferConfig | None = None, seconds: float = 0.5) -> float:
    """Tiles/s of the generator at the render's settings (``InferConfig``'s defaults unless
    given), measured on this machine after one warm-up.

    A fixed per-model constant was 5× off between two machines of the same kind; half a
    second of measurement is not.
    """
    import numpy as np

    from geopix.infer import Predictor

    infer = infer or InferConfig()
    predictor = Predictor.from_loaded(model, infer.device, infer.channels_last, infer.precision)
    per_call = predictor.tiles_per_call(infer.batch_size)
    shape = (per_call, model.spec.input_nc, tile, tile)
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    predictor.predict(x)
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        predictor.predict(x)
        n += 1
    return n * per_call / (time.perf_counter() - t0)


def estimated_seconds(n_tiles: int, rate: float) -> float:
    """A render's wall time from the measured generator rate."""
    return RENDER_START_S + n_tiles / (rate * E2E_FRACTION_OF_RAW)
