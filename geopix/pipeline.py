"""Where the stages meet: read → plan → infer → blend → write (→ pyramid).

``render`` is the public entry point (and what ``geopix render`` calls); ``predict``
applies the same tiling and blending to folders of plain images; ``info`` describes a
raster and the job it would be; ``demo`` makes a synthetic scene and renders it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from geopix import __version__
from geopix.config import InferConfig, RenderConfig, TileConfig
from geopix.errors import AOIError, GeopixError, InputNotFoundError, NotARasterError, TilingError
from geopix.execute import (
    BlockJob,
    cache_friendly_order,
    close_readers,
    cluster_precision,
    connect,
    resolve_scheduler,
    run_dask,
    run_sync,
)
from geopix.models.checkpoint import LoadedModel, ModelSpec
from geopix.models.registry import load_model, resolve_model
from geopix.plan import Block, RenderPlan, Window
from geopix.read import RasterInfo, colour_match, inspect_raster, work_grid
from geopix.write import StoreSpec, finalize_geotiff, open_store, prepare_output, remove_store, write_manifest

MAP_NAME = "map.tif"
STORE_NAME = "map.zarr"


@dataclass(frozen=True)
class RenderResult:
    """What a render produced, and how long it took."""

    map_path: Path
    store_path: Path | None
    width: int
    height: int
    tiles: int
    tiles_run: int
    tiles_skipped: int
    blocks: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    tiles_path: Path | None = None
    blocks_resumed: int = 0  # blocks found finished by an interrupted earlier run
    tiles_cached: int = 0  # border tiles read from a neighbouring block instead of recomputed
    precision: str = "fp32"  # what the generator ran in (``auto`` resolved)

    @property
    def tiles_per_second(self) -> float:
        return self.tiles_run / self.seconds if self.seconds else 0.0

    @property
    def megapixels_per_second(self) -> float:
        return self.width * self.height / 1e6 / self.seconds if self.seconds else 0.0


def check_tiling(tiles: TileConfig, spec: ModelSpec) -> None:
    if tiles.tile_size % spec.multiple:
        raise TilingError(
            f"--tile-size {tiles.tile_size} must be a multiple of {spec.multiple} for this model "
            f"(a U-Net with {spec.num_downs} down-samplings); try --tile-size {spec.multiple}"
        )


def _aoi(aoi_path: Path, info: RasterInfo, out_transform, out_h: int, out_w: int) -> tuple[Window, bytes]:
    """Read a GeoJSON AOI (any CRS), reproject it onto the raster, return its output window."""
    import numpy as np
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


class _Progress:
    """A rich progress bar over tiles (done/total, tiles/s, ETA) with quiet fallback."""

    def __init__(self, total: int, enabled: bool, label: str) -> None:
        self.total, self.enabled, self.label = total, enabled, label
        self.bar = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("tiles"),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=self.total, rate="")
            self.t0 = time.perf_counter()
        return self

    def advance(self, n: float) -> None:
        if self.bar is not None:
            done = self.bar.tasks[0].completed + n
            rate = done / max(1e-9, time.perf_counter() - self.t0)
            self.bar.update(self.task, advance=n, rate=f"{rate:.1f} tiles/s")

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def render(config: RenderConfig | None = None, /, **kwargs) -> RenderResult:
    """Render ``config.input`` into ``config.output_dir/map.tif``; see ``RenderConfig``.

    Also callable as ``geopix.render(input="city.tif", output_dir="out", model="sat2map")``.
    """
    if config is None:
        config = _config_from_kwargs(kwargs)
    t_start = time.perf_counter()
    out_dir = Path(config.output_dir)
    model = load_model(config.model)
    check_tiling(config.tiles, model.spec)
    info = inspect_raster(config.input, config.bands, config.allow_no_crs)
    xyz = None if config.xyz is None else Path(config.xyz) if Path(config.xyz).is_absolute() else out_dir / config.xyz
    if xyz is not None and not config.overwrite:
        pending = _pending_web_tiles(out_dir, xyz, info, model)
        if pending is not None:  # an earlier run of this command rendered the map, not its tiles
            return _finish(config, out_dir, xyz, pending, t_start, resumed=True)
    xyz_name = [str(config.xyz)] if config.xyz is not None and not Path(config.xyz).is_absolute() else []
    prepare_output(out_dir, [MAP_NAME, *xyz_name], config.overwrite)
    scheduler = resolve_scheduler(config.scheduler, config.scheduler_file)
    if scheduler != config.scheduler:  # --scheduler-file or $DASK_SCHEDULER_ADDRESS: also for the pyramid
        config = dataclasses.replace(config, scheduler=scheduler, scheduler_file=None)
    with ThreadPoolExecutor(1) as pool:
        # The colour statistics decode the whole raster (GDAL, without the GIL) while the
        # cluster starts (mostly Python): on an 8192² raster 1.1 s and 1.1 s, now overlapped.
        matching = config.match_colors and model.spec.input_stats
        stats_future = pool.submit(colour_match, info, model.spec.input_stats) if matching else None
        with _cluster(config) as client:
            if stats_future is not None:
                info = stats_future.result()
            config, job, plan, all_blocks, done, stats = _compute_blocks(config, client, model, info, out_dir)
    t_write = time.perf_counter()
    map_path = finalize_geotiff(
        job.store,
        out_dir / MAP_NAME,
        crs=info.crs,
        transform=_store_transform(job),
        cog=config.cog,
        tags={
            "GEOPIX_VERSION": __version__,
            "GEOPIX_MODEL": Path(job.model_path).name,
            "GEOPIX_SOURCE": Path(info.path).name,
        },
    )
    stats["finalize"] = time.perf_counter() - t_write
    if not config.keep_zarr:
        remove_store(job.store)
    manifest = {
        "geopix": __version__,
        "input": info.path,
        "model": job.model_path,
        "tile_size": plan.tile,
        "overlap": plan.overlap,
        "chunk_size": plan.chunk,
        "precision": job.infer.precision,
        "work_grid": [job.grid.height, job.grid.width],
        "output": str(map_path),
        "width": job.store.width,
        "height": job.store.height,
        "tiles": plan.n_tiles,
        "tiles_run": int(stats.pop("tiles", 0)),
        "tiles_skipped": int(stats.pop("skipped", 0)),
        "tiles_cached": int(stats.pop("cached", 0)),
        "blocks": len(all_blocks),
        "blocks_resumed": len(done),
        "store": str(job.store.path) if config.keep_zarr else None,
        "seconds": round(time.perf_counter() - t_start, 3),
        "stage_seconds": {k: round(v, 3) for k, v in stats.items() if k != "pixels"},
    }
    if xyz is not None:
        # Recorded before the pyramid starts: if it fails, the rerun of the same command finds
        # the map and its manifest and builds only the tiles (instead of "map.tif exists").
        manifest["web_tiles"] = {"path": str(xyz), "done": False}
    write_manifest(out_dir / "render.json", manifest)
    return _finish(config, out_dir, xyz, manifest, t_start)


def _pending_web_tiles(out_dir: Path, xyz: Path, info: RasterInfo, model: LoadedModel) -> dict | None:
    """The manifest of an earlier render of this input and model whose web tiles at ``xyz`` are
    not finished (the pyramid failed or was interrupted), or None."""
    try:
        manifest = json.loads((out_dir / "render.json").read_text())
    except (OSError, ValueError):
        return None
    tiles = manifest.get("web_tiles") or {}
    same = manifest.get("input") == info.path and manifest.get("model") == model.path
    if same and tiles.get("path") == str(xyz) and not tiles.get("done") and (out_dir / MAP_NAME).exists():
        return manifest
    return None


def _finish(
    config: RenderConfig, out_dir: Path, xyz: Path | None, manifest: dict, t_start: float, resumed: bool = False
) -> RenderResult:
    """Build the web tiles (when asked), complete ``render.json`` and return the result.

    ``resumed``: the map is an earlier run's; tiles that run left at ``xyz`` are unfinished."""
    map_path = Path(manifest["output"])
    stage_seconds = dict(manifest["stage_seconds"])
    pyramid = None
    if xyz is not None:
        from geopix.pyramid import PyramidConfig, build_pyramid

        t_pyr = time.perf_counter()
        pyramid = build_pyramid(
            map_path,
            xyz,
            PyramidConfig(overwrite=config.overwrite or resumed),
            scheduler=resolve_scheduler(config.scheduler, config.scheduler_file),
            workers=config.workers,
            progress=config.progress,
        )
        stage_seconds["pyramid"] = round(time.perf_counter() - t_pyr, 3)
        manifest = {**manifest, "web_tiles": {"path": str(pyramid.path), "done": True}}
    seconds = time.perf_counter() - t_start
    manifest = {**manifest, "seconds": round(seconds, 3), "stage_seconds": stage_seconds}
    write_manifest(out_dir / "render.json", manifest)
    return RenderResult(
        map_path=map_path,
        store_path=Path(manifest["store"]) if manifest.get("store") else None,
        width=manifest["width"],
        height=manifest["height"],
        tiles=manifest["tiles"],
        tiles_run=manifest["tiles_run"],
        tiles_skipped=manifest["tiles_skipped"],
        tiles_cached=manifest["tiles_cached"],
        blocks=manifest["blocks"],
        blocks_resumed=manifest["blocks_resumed"],
        seconds=seconds,
        stage_seconds=stage_seconds,
        tiles_path=pyramid.path if pyramid else None,
        precision=manifest["precision"],
    )


def _compute_blocks(
    config: RenderConfig, client, model: LoadedModel, info: RasterInfo, out_dir: Path
) -> tuple[RenderConfig, BlockJob, RenderPlan, list[Block], set[tuple[int, int]], dict[str, float]]:
    """Plan the job, open (or resume) the block store and run the blocks still to do."""
    # Resolve `auto` precision once, for every worker, before the fingerprint: a render
    # resumed on another scheduler then never mixes bf16 and fp32 blocks.
    infer = dataclasses.replace(config.infer, precision=cluster_precision(config.infer, client))
    config = dataclasses.replace(config, infer=infer)
    job, plan = build_job(config, info, model, out_dir)
    all_blocks = list(plan.blocks())
    done = open_store(
        job.store,
        fingerprint(job, config),
        {"geopix": __version__, "input": info.path, "model": job.model_path},
        force=config.force or config.overwrite,
    )
    blocks = cache_friendly_order([b for b in all_blocks if b.index not in done])
    job = dataclasses.replace(job, infer=_local_threads(config, job.infer, len(blocks)))
    return config, job, plan, all_blocks, done, _execute(job, blocks, config, client)


def fingerprint(job: BlockJob, config: RenderConfig) -> str:
    """What makes two renders the same job: input file, model bytes, and every setting that
    changes pixels.  An interrupted render resumes only into a store with this fingerprint."""
    import hashlib

    src = Path(job.info.path).stat()
    h = hashlib.sha256()
    with open(job.model_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    doc = {
        "geopix": __version__,
        "input": job.info.path,
        "size": src.st_size,
        "mtime_ns": src.st_mtime_ns,
        "model_sha256": h.hexdigest(),
        "plan": dataclasses.asdict(job.plan),
        "grid": dataclasses.asdict(job.grid),
        "bands": job.info.bands,
        "stretch": job.info.stretch,
        "colour": job.info.colour,
        "aoi": job.aoi_wkb.hex() if job.aoi_wkb else None,
        "output_on_work": job.output_on_work,
        "batch": job.infer.batch_size,
        "precision": job.infer.precision,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def build_job(config: RenderConfig, info: RasterInfo, model: LoadedModel, out_dir: Path) -> tuple[BlockJob, RenderPlan]:
    """The pure part of a render once the inputs are known: grids, plan and the worker job."""
    from rasterio.transform import Affine

    grid = work_grid(info, model.spec.ground_resolution_m, config.resample)
    on_work = config.output_resolution == "model"
    if config.output_resolution not in ("source", "model"):
        raise GeopixError(f"--output-resolution {config.output_resolution!r} must be 'source' or 'model'")
    out_h, out_w = (grid.height, grid.width) if on_work else (info.height, info.width)
    out_transform = grid.transform(info) if on_work else info.affine
    region, aoi_wkb = None, None
    if config.aoi is not None:
        region, aoi_wkb = _aoi(Path(config.aoi), info, out_transform, out_h, out_w)
    plan = RenderPlan(
        out_height=out_h,
        out_width=out_w,
        work_height=grid.height,
        work_width=grid.width,
        tile=config.tiles.tile_size,
        overlap=config.tiles.overlap,
        chunk=config.tiles.chunk_size,
        region=region,
    )
    ext = plan.extent
    store = StoreSpec(str(out_dir / STORE_NAME), ext.height, ext.width, plan.chunk, ext.row, ext.col)
    job = BlockJob(
        info=info,
        grid=grid,
        plan=plan,
        model_path=str(Path(resolve_model(config.model)).resolve()),
        store=store,
        infer=config.infer,
        output_on_work=on_work,
        aoi_wkb=aoi_wkb,
        out_transform=tuple(out_transform)[:6] if isinstance(out_transform, Affine) else None,
    )
    return job, plan


def _store_transform(job: BlockJob):
    from rasterio.transform import Affine

    base = Affine(*job.out_transform)
    return base @ Affine.translation(job.store.col, job.store.row)


def _local_threads(config: RenderConfig, infer: InferConfig, n_blocks: int) -> InferConfig:
    """Torch threads per task on a local cluster; remote workers keep their own setting.

    The in-process default runs a task thread per core, so each task gets 1 — or, with fewer
    blocks than cores, the idle cores too (the thread count does not change a byte: see the
    determinism test).  Worker processes get cores / workers.
    """
    cores = os.cpu_count() or 1
    if config.scheduler is None and config.workers is None:
        return dataclasses.replace(infer, threads=max(1, cores // max(1, min(cores, n_blocks))))
    if config.scheduler is None and infer.threads is None:
        return dataclasses.replace(infer, threads=max(1, cores // config.workers))
    return infer


@contextlib.contextmanager
def _cluster(config: RenderConfig) -> Iterator[object | None]:
    """A Dask client for the render (None with the sync scheduler); closed afterwards."""
    if config.scheduler == "sync":
        yield None
        return
    import torch

    torch_threads = torch.get_num_threads()  # the in-process worker changes it; put it back
    client, cluster = connect(config.scheduler, config.workers, announce=_to_stderr)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        torch.set_num_threads(torch_threads)


def _execute(job: BlockJob, blocks: list[Block], config: RenderConfig, client) -> dict[str, float]:
    """Run the blocks (in this process when ``client`` is None); return the summed stage timings."""
    totals: dict[str, float] = {}
    n_tiles = sum(len(b.tiles) for b in blocks)
    with _Progress(n_tiles, config.progress, "render") as bar:

        def on_done(block: Block, stats: dict[str, float]) -> None:
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v
            bar.advance(len(block.tiles))

        try:
            if client is None:
                run_sync(job, blocks, on_done)
            else:
                slots = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values())
                run_dask(job, blocks, on_done, client, max_in_flight=2 * max(1, slots))
        finally:
            if client is None or config.scheduler is None:
                close_readers()  # the task threads ran in this process; nothing runs now
    return totals


def _to_stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)


def _config_from_kwargs(kwargs: dict) -> RenderConfig:
    tiles = TileConfig(**{k: kwargs.pop(k) for k in ("tile_size", "overlap", "chunk_size") if k in kwargs})
    infer = InferConfig(**{k: kwargs.pop(k) for k in ("device", "batch_size", "threads", "precision") if k in kwargs})
    if "input" not in kwargs or "output_dir" not in kwargs:
        raise GeopixError("render() needs input= and output_dir= (or a RenderConfig)")
    kwargs["input"] = Path(kwargs["input"])
    kwargs["output_dir"] = Path(kwargs["output_dir"])
    return RenderConfig(tiles=tiles, infer=infer, **kwargs)


# ---- predict: folders of plain images ------------------------------------------------------
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def predict(
    in_dir: str | Path,
    out_dir: str | Path,
    model: str = "sat2map",
    tiles: TileConfig | None = None,
    infer: InferConfig | None = None,
    overwrite: bool = False,
    progress: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Map every image in ``in_dir`` with the render's tiling and blending; writes ``OUT/<stem>.png``."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from geopix.blend import Accumulator, to_uint8
    from geopix.infer import Predictor
    from geopix.plan import TileGrid

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    tiles = tiles or TileConfig()
    infer = infer or InferConfig()
    if not in_dir.is_dir():
        raise InputNotFoundError(f"input folder {in_dir} does not exist; pass a folder of PNG/JPEG images")
    files = sorted(p for p in in_dir.iterdir() if p.suffix.lower() in PLAIN_SUFFIXES)
    if not files:
        raise InputNotFoundError(f"no images ({', '.join(PLAIN_SUFFIXES)}) in {in_dir}")
    loaded = load_model(model)
    check_tiling(tiles, loaded.spec)
    prepare_output(out_dir, [f"{p.stem}.png" for p in files], overwrite)
    predictor = Predictor.from_loaded(loaded, infer.device, infer.channels_last, infer.precision)
    written = []
    for path in files:
        try:
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise NotARasterError(f"{path} is not an image PIL can read ({exc})") from exc
        h, w = img.shape[:2]
        grid = TileGrid(h, w, tiles.tile_size, tiles.overlap)
        region = Window(0, 0, h, w)
        x = img.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        read = grid.window(0, 0).union(grid.window(grid.rows - 1, grid.cols - 1))
        pads = ((0, 0), (-read.row, read.row_stop - h), (-read.col, read.col_stop - w))
        x = np.pad(x, pads, mode="reflect" if min(h, w) > 1 else "edge")
        acc = Accumulator(region, 3, tiles.tile_size, tiles.overlap)
        order = list(grid)
        for k in range(0, len(order), infer.batch_size):
            chunk = order[k : k + infer.batch_size]
            batch = np.zeros((infer.batch_size, 3, tiles.tile_size, tiles.tile_size), np.float32)
            for n, ij in enumerate(chunk):
                batch[n] = x[(slice(None), *grid.window(*ij).relative_to(read))]
            pred = predictor.predict(batch)
            for n, ij in enumerate(chunk):
                acc.add(grid.window(*ij), pred[n])
        values, _ = acc.result()
        dst = out_dir / f"{path.stem}.png"
        tmp = dst.with_name(dst.name + ".partial")
        Image.fromarray(to_uint8(values).transpose(1, 2, 0)).save(tmp, format="PNG")
        tmp.replace(dst)
        written.append(dst)
        if progress:
            progress(dst)
    return written


# ---- info ------------------------------------------------------------------------------------
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
    shape = (infer.batch_size, model.spec.input_nc, tile, tile)
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    predictor.predict(x)
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        predictor.predict(x)
        n += 1
    return n * infer.batch_size / (time.perf_counter() - t0)


def estimated_seconds(n_tiles: int, rate: float) -> float:
    """A render's wall time from the measured generator rate."""
    return RENDER_START_S + n_tiles / (rate * E2E_FRACTION_OF_RAW)


# ---- demo ------------------------------------------------------------------------------------
def demo(
    out_dir: str | Path = "geopix-demo",
    model: str = "sat2map",
    size: int = 1024,
    overwrite: bool = True,
    progress: bool = True,
    workers: int | None = None,
) -> RenderResult:
    """Make a synthetic georeferenced aerial-like scene and render it (a fresh install's smoke run)."""
    from geopix.testing import synthetic_aerial

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = synthetic_aerial(out_dir / "demo_aerial.tif", size=size)
    return render(
        RenderConfig(
            input=src, output_dir=out_dir, model=model, overwrite=overwrite, progress=progress, workers=workers
        )
    )
