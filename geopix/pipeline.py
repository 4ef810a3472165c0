"""A render, as four visible steps: prepare → compute → finalize → publish.

``render`` is the public entry point (and what ``geopix render`` calls).  *prepare* loads the
model, inspects the raster, plans the job and checks it against the memory budget, before
anything runs; *compute* runs the blocks still to do on the cluster (``geopix.cluster``) into
the zarr store; *finalize* turns the store into ``map.tif``; *publish* hands the map to
``geopix.publish`` (``render.json``, the web tiles, uploads).  The whole render holds the lock
on its output folder (``geopix.output``).  With an object-store ``-o`` (``s3://bucket/run``)
the block store lives in the bucket and the finished files are built in a local temporary
folder, then published there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import signal
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rasterio.transform import Affine

from geopix import __version__, execute
from geopix.aoi import aoi_window
from geopix.budget import MemoryEstimate, auto_budget, check_budget, estimate
from geopix.cluster import (
    cluster_precision,
    open_cluster,
    resolve_scheduler,
    run_tasks,
    set_up_workers,
    task_threads,
)
from geopix.config import InferConfig, ProgressFn, RenderConfig, TileConfig, resolve_config
from geopix.errors import Interrupted
from geopix.execute import BlockJob, close_readers
from geopix.models.distribute import fetch_checkpoint, send_to_workers, sha256_file
from geopix.mosaic import resolve_input
from geopix.output import check_output, claim_output, hold_remote_lock, refuse_input
from geopix.plan import Block, RenderPlan, cache_friendly_order, check_tiling
from geopix.process import configure_gdal
from geopix.publish import (
    MAP_NAME,
    Computed,
    RenderResult,
    model_path,
    pending_remote_tiles,
    pending_web_tiles,
    publish_remote,
    publish_tiles,
    resume_remote_tiles,
    write_render_manifest,
)
from geopix.pyramid import check_tiles_output
from geopix.read import RasterInfo, colour_match, colour_statistics, inspect_raster, work_grid
from geopix.remote import check_remote_output, is_url, join
from geopix.source import VRT_PREFIX, is_remote, redact
from geopix.write import StoreSpec, done_blocks, finalize_geotiff, open_store, remove_store

if TYPE_CHECKING:
    from geopix.models.checkpoint import LoadedModel

log = logging.getLogger(__name__)

STORE_NAME = "map.zarr"


@dataclass(frozen=True)
class Prepared:
    """A render once planned: nothing has run yet, and the plan fits the memory budget."""

    config: RenderConfig  # the scheduler resolved
    out_dir: Path  # where finished files are built (a temporary folder for an object-store -o)
    model: LoadedModel
    job: BlockJob
    plan: RenderPlan
    memory: MemoryEstimate
    #: The raster's colour statistics, being read while the model loads; None where a worker
    #: reads them (a cluster) or colours are not matched.
    statistics: StatisticsRead | None = None


@dataclass(frozen=True)
class StatisticsRead:
    """``read.colour_statistics`` running in a thread; ``stop`` ends it at its next cell."""

    future: Future
    stop: threading.Event


def render(config: RenderConfig | None = None, /, *, on_progress: ProgressFn | None = None, **kwargs) -> RenderResult:
    """Render ``config.input`` into ``config.output_dir/map.tif``; see ``RenderConfig``.

    Also callable as ``geopix.render(input="city.tif", output_dir="out", model="sat2map")``.
    ``on_progress(stage, done, total)`` is called as tiles finish.
    """
    if config is None:
        kwargs = _render_kwargs(kwargs)
    config = resolve_config(RenderConfig, config, kwargs, "render")
    t_start = time.perf_counter()
    configure_gdal()
    if is_url(config.output_dir):
        return _render_to_store(config, t_start, on_progress)
    out_dir = Path(config.output_dir)
    xyz = None if config.xyz is None else Path(config.xyz) if Path(config.xyz).is_absolute() else out_dir / config.xyz
    xyz_name = _names_in_output(config)
    with claim_output(out_dir, [], config.overwrite):
        pending = None if xyz is None or config.overwrite else pending_web_tiles(config, out_dir, xyz)
        if pending is not None:  # an earlier run of this command rendered the map, not its tiles
            return publish_tiles(config, out_dir, xyz, pending, t_start, on_progress, resumed=True)
        local = [Path(p) for p in _inputs(config) if not is_url(p)]
        refuse_input([out_dir / MAP_NAME, *([xyz] if xyz is not None else [])], local, "-o")
        if xyz is not None:  # before the slow part: --overwrite replaces a tile set, nothing else
            check_tiles_output(xyz, config.overwrite)
        check_output(out_dir, [MAP_NAME, *xyz_name], config.overwrite)
        prepared = prepare(config)
        computed = compute(prepared, on_progress)
        map_path = _finalize_timed(prepared, computed)
        return publish(prepared, computed, map_path, xyz, t_start, on_progress)


def _inputs(config: RenderConfig) -> list[str]:
    """The input names as given (one, or a mosaic's several)."""
    return [str(p) for p in config.input] if isinstance(config.input, tuple | list) else [str(config.input)]


def _names_in_output(config: RenderConfig) -> list[str]:
    """The web-tile name a render writes *inside* its output folder (a relative ``--xyz``), which
    must not exist yet; an absolute ``--xyz`` lies elsewhere and is checked where it is written."""
    return [str(config.xyz)] if config.xyz is not None and not Path(config.xyz).is_absolute() else []


def _render_to_store(config: RenderConfig, t_start: float, on_progress: ProgressFn | None) -> RenderResult:
    """A render whose ``-o`` is an object-store URL: the block store lives there (workers write
    their chunks, resume works against it); ``map.tif``, web tiles and ``render.json`` are built in
    a local temporary folder and published to the bucket (``publish.publish_remote``)."""
    output = str(config.output_dir)
    with tempfile.TemporaryDirectory(prefix="geopix-render-") as tmp, hold_remote_lock(output):
        out_dir = Path(tmp)
        xyz = None if config.xyz is None else out_dir / Path(config.xyz).name
        if xyz is not None and not config.overwrite:
            pending = pending_remote_tiles(config, output, join(output, xyz.name))
            if pending is not None:  # an earlier run of this command uploaded the map, not its tiles
                return resume_remote_tiles(config, output, out_dir, xyz, pending, t_start, on_progress)
        check_remote_output(output, [MAP_NAME, *_names_in_output(config)], config.overwrite)
        prepared = prepare(config, out_dir)
        computed = compute(prepared, on_progress)
        map_path = _finalize_timed(prepared, computed)
        return publish_remote(config, output, out_dir, computed, map_path, xyz, t_start, on_progress)


def source_label(name: str) -> str:
    """A short name for the source in tags (the file name; ``mosaic.vrt`` for a mosaic)."""
    if name.startswith(VRT_PREFIX):
        return "mosaic.vrt"
    return name.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def prepare(config: RenderConfig, out_dir: Path | None = None) -> Prepared:
    """Load the model, inspect the raster, plan the job and check it against the memory budget."""
    scheduler = resolve_scheduler(config.scheduler, config.scheduler_file)
    if scheduler != config.scheduler:  # --scheduler-file or $DASK_SCHEDULER_ADDRESS: also for the pyramid
        config = dataclasses.replace(config, scheduler=scheduler, scheduler_file=None)
    if "://" in str(config.model):  # a checkpoint URL: downloaded once, then a local path
        config = dataclasses.replace(config, model=str(fetch_checkpoint(str(config.model))))
    from geopix.models.registry import load_model, resolve_model

    resolve_model(config.model)  # a wrong name or path fails before the statistics' read starts
    info = inspect_raster(resolve_input(config.input), config.bands, config.allow_no_crs)
    statistics = _read_statistics(config, info)
    try:
        model = load_model(config.model)  # imports torch (0.9 s) while the statistics are read
        if statistics is not None and not model.spec.input_stats:  # nothing to match them to
            statistics.stop.set()
            statistics = None
        return _plan(config, info, model, out_dir, statistics)
    except BaseException:
        if statistics is not None:
            statistics.stop.set()  # the error (or Ctrl-C) is not held up by the rest of the read
        raise


def _plan(
    config: RenderConfig, info: RasterInfo, model: LoadedModel, out_dir: Path | None, statistics: StatisticsRead | None
) -> Prepared:
    """``prepare`` once the model is loaded: the tiling's check, the job, its plan and its memory."""
    check_tiling(config.tiles.tile_size, config.tiles.overlap, model.spec.multiple, model.spec.num_downs)
    out_dir = out_dir if out_dir is not None else Path(config.output_dir)
    job, plan = build_job(config, info, model)
    memory = _memory(config, plan, model)
    check_budget(
        memory,
        config.memory_budget or auto_budget(),
        plan=plan,
        source_res_m=min(info.res_m) if info.res_m else None,
        model_res_m=model.spec.ground_resolution_m if config.resample else None,
        chunk_size=config.tiles.chunk_size,
    )
    _announce(plan, model, config.infer)
    return Prepared(config, out_dir, model, job, plan, memory, statistics)


def _read_statistics(config: RenderConfig, info: RasterInfo) -> StatisticsRead | None:
    """Start reading the colour statistics here, before the model loads: the read is GDAL's (no
    GIL) and loading imports torch, so on an 8192² raster 0.8 s of reading overlaps 0.9 s of
    importing.  On a cluster the client may be far from the data (a laptop, the raster in a
    bucket): a worker reads them (``compute``), the client only the header."""
    if not config.match_colors or config.scheduler not in (None, "sync"):
        return None
    pool, stop = ThreadPoolExecutor(1, thread_name_prefix="geopix-statistics"), threading.Event()
    try:
        return StatisticsRead(pool.submit(colour_statistics, info, stop), stop)
    finally:
        pool.shutdown(wait=False)  # the read goes on; the thread ends with it


#: A plan of at least this many tiles is announced (blocks, tiles, time estimate) before the first
#: slow step (the colour statistics read an overview; on a huge raster that alone takes minutes).
ANNOUNCE_TILES = 2000


def _announce(plan: RenderPlan, model: LoadedModel, infer: InferConfig) -> None:
    """Log a long plan's size and an estimate from this machine's generator rate (0.5 s to measure)."""
    if plan.n_tiles < ANNOUNCE_TILES:
        return
    from geopix.describe import estimated_seconds, generator_rate

    rate = generator_rate(model, plan.tile, infer)
    seconds = estimated_seconds(plan.n_tiles, rate)
    blocks = plan.block_shape[0] * plan.block_shape[1]
    log.info(
        "plan: %d blocks, %d tiles (tiles without data are skipped); at most about %s at this machine's "
        "%.1f tiles/s; Ctrl-C keeps the finished blocks for a rerun",
        blocks,
        plan.n_tiles,
        _duration(seconds),
        rate,
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _memory(config: RenderConfig, plan: RenderPlan, model: LoadedModel) -> MemoryEstimate:
    local = config.scheduler is None
    processes = config.workers if local and config.workers else 1
    blocks = plan.block_shape[0] * plan.block_shape[1]
    at_once = min(os.cpu_count() or 1, blocks) if local and not config.workers else 1
    params = sum(p.numel() * 4 for p in model.net.parameters())
    return estimate(
        plan,
        batch_size=config.infer.batch_size,
        ngf=model.spec.ngf,
        param_bytes=params,
        tasks_at_once=at_once,
        processes=processes,
    )


def compute(prepared: Prepared, on_progress: ProgressFn | None = None) -> Computed:
    """Run the blocks still to do into the store (resuming an interrupted render of the same job)."""
    config, job, plan = prepared.config, prepared.job, prepared.plan
    try:
        stats_in = prepared.model.spec.input_stats if config.match_colors else None
        with open_cluster(config.scheduler, config.workers, log.info, config.dashboard) as client:
            if client is not None and config.scheduler is not None and job.model_name is None:
                send_to_workers(client, job.model_path, job.model_sha256)  # they may not see our files
            if stats_in and prepared.statistics is None and client is not None:  # a cluster: see _read_statistics
                job = dataclasses.replace(
                    job, info=client.submit(colour_match, job.info, stats_in, pure=False).result()
                )
            elif stats_in:  # read here: already, or now if nothing started the read
                read = prepared.statistics.future.result() if prepared.statistics is not None else None
                job = dataclasses.replace(job, info=colour_match(job.info, stats_in, read))
            return _run_blocks(config, job, plan, client, on_progress, prepared.model)
    except BaseException:
        if prepared.statistics is not None:
            prepared.statistics.stop.set()  # Ctrl-C while they are read: the process need not wait
        raise
    finally:
        close_readers()  # the cluster has closed: no task thread of this process reads any more


def _run_blocks(
    config: RenderConfig, job: BlockJob, plan: RenderPlan, client, on_progress, model: LoadedModel
) -> Computed:
    # Resolve `auto` precision once, for every worker, before the fingerprint: a render
    # resumed on another scheduler then never mixes bf16 and fp32 blocks.
    precision = cluster_precision(job.infer, client, job.model_path, model)
    job = dataclasses.replace(job, infer=dataclasses.replace(job.infer, precision=precision))
    all_blocks = plan.block_shape[0] * plan.block_shape[1]
    done = open_store(
        job.store,
        fingerprint(job),
        {"geopix": __version__, "input": redact(job.info.path), "model": job.model_path},
        force=config.force or config.overwrite,
    )
    blocks = cache_friendly_order([b for b in plan.blocks() if b.index not in done])
    set_up_workers(client, task_threads(config.scheduler, config.workers, job.infer.threads, len(blocks)))
    totals: dict[str, float] = {}
    n_tiles, progress = sum(len(b.tiles) for b in blocks), [0, len(done)]

    def on_done(block: Block, stats: dict[str, float]) -> None:
        for k, v in stats.items():
            totals[k] = totals.get(k, 0.0) + v
        progress[0] += len(block.tiles)
        progress[1] += 1
        if on_progress is not None:
            on_progress("render", progress[0], n_tiles)

    if on_progress is not None:
        on_progress("render", 0, n_tiles)
    try:
        run_tasks(execute.process_block, (job,), blocks, on_done, client, label="block")
    except (KeyboardInterrupt, Interrupted) as exc:
        # The store, not the callbacks, says what is finished: blocks that workers wrote after
        # the last callback ran are kept too, and the rerun resumes exactly these.
        finished = _count_done(job, progress[1])
        raise Interrupted(
            f"{finished} of {all_blocks} blocks are finished in {redact(job.store.path)}; "
            "rerun the same command to compute only the others",
            getattr(exc, "signum", signal.SIGINT),
        ) from exc
    return Computed(job, all_blocks, len(done), totals)


def _count_done(job: BlockJob, counted: int) -> int:
    """Finished blocks in the store (``counted``, the callbacks' count, if the store cannot be listed)."""
    try:
        return len(done_blocks(job.store))
    except Exception:  # an interrupt must still say something; the store is only listed here
        log.debug("cannot list the finished blocks of %s", job.store.path, exc_info=True)
        return counted


def _finalize_timed(prepared: Prepared, computed: Computed) -> Path:
    """``finalize``, its seconds recorded in ``computed.stats``; an interrupt says what is kept."""
    t_write = time.perf_counter()
    try:
        map_path = finalize(prepared, computed)
    except (KeyboardInterrupt, Interrupted) as exc:
        raise Interrupted(
            f"stopped while writing {MAP_NAME} (not written): all {computed.blocks} blocks are finished in "
            f"{redact(computed.job.store.path)}; rerun the same command to write {MAP_NAME} from them "
            "without computing any again",
            getattr(exc, "signum", signal.SIGINT),
        ) from exc
    computed.stats["finalize"] = time.perf_counter() - t_write
    return map_path


def finalize(prepared: Prepared, computed: Computed) -> Path:
    """The store → ``map.tif`` (a COG unless ``--no-cog``); the store goes unless ``--keep-zarr``."""
    job, info = computed.job, computed.job.info
    map_path = finalize_geotiff(
        job.store,
        prepared.out_dir / MAP_NAME,
        crs=info.crs,
        transform=_store_transform(job),
        cog=prepared.config.cog,
        tags={
            "GEOPIX_VERSION": __version__,
            "GEOPIX_MODEL": Path(job.model_path).name,
            "GEOPIX_SOURCE": source_label(info.path),
        },
    )
    if not prepared.config.keep_zarr:
        remove_store(job.store)
    return map_path


def publish(
    prepared: Prepared,
    computed: Computed,
    map_path: Path,
    xyz: Path | None,
    t_start: float,
    on_progress: ProgressFn | None,
) -> RenderResult:
    """``render.json``, then the web tiles (``--xyz``); returns what the render produced."""
    manifest = write_render_manifest(prepared.out_dir, prepared.config, computed, map_path, xyz, t_start)
    return publish_tiles(prepared.config, prepared.out_dir, xyz, manifest, t_start, on_progress)


def fingerprint(job: BlockJob) -> str:
    """What makes two renders the same job: input file, model bytes, and every setting that
    changes pixels.  An interrupted render resumes only into a store with this fingerprint."""
    local = not is_remote(job.info.path) and not job.info.path.startswith(VRT_PREFIX)
    src = Path(job.info.path).stat() if local else None
    doc = {
        "geopix": __version__,
        "input": job.info.path,
        "size": src.st_size if src else None,  # remote: the URL names the job (ETags are not portable)
        "mtime_ns": src.st_mtime_ns if src else None,
        "model_sha256": job.model_sha256 or sha256_file(job.model_path),
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


def build_job(config: RenderConfig, info: RasterInfo, model: LoadedModel) -> tuple[BlockJob, RenderPlan]:
    """The pure part of a render once the inputs are known: grids, plan and the worker job."""
    from geopix.models.registry import REGISTRY

    grid = work_grid(info, model.spec.ground_resolution_m, config.resample)
    checkpoint = model_path(config.model)
    on_work = config.output_resolution == "model"
    out_h, out_w = (grid.height, grid.width) if on_work else (info.height, info.width)
    out_transform = grid.transform(info) if on_work else info.affine
    region, aoi_wkb = None, None
    if config.aoi is not None:
        region, aoi_wkb = aoi_window(Path(config.aoi), info, out_transform, out_h, out_w)
    ext_h, ext_w = (region.height, region.width) if region else (out_h, out_w)
    plan = RenderPlan(
        out_height=out_h,
        out_width=out_w,
        work_height=grid.height,
        work_width=grid.width,
        tile=config.tiles.tile_size,
        overlap=config.tiles.overlap,
        # A chunk larger than the map is one block either way; clipped, the zarr chunk is too.
        chunk=min(config.tiles.chunk_size, max(ext_h, ext_w)),
        region=region,
    )
    ext = plan.extent
    output = config.output_dir
    store_path = join(str(output), STORE_NAME) if is_url(output) else str(Path(output) / STORE_NAME)
    store = StoreSpec(store_path, ext.height, ext.width, plan.chunk, ext.row, ext.col)
    job = BlockJob(
        info=info,
        grid=grid,
        plan=plan,
        model_path=checkpoint,
        model_sha256=sha256_file(checkpoint),
        model_name=str(config.model) if str(config.model) in REGISTRY else None,
        store=store,
        infer=config.infer,
        output_on_work=on_work,
        aoi_wkb=aoi_wkb,
        out_transform=tuple(out_transform)[:6] if isinstance(out_transform, Affine) else None,
        # The shared-tile cache is a folder beside a local store; an object store skips it
        # (the same pixels: a cached prediction equals a fresh one bit for bit).
        cache_tiles=not is_url(output),
    )
    return job, plan


def _store_transform(job: BlockJob):
    base = Affine(*job.out_transform)
    return base @ Affine.translation(job.store.col, job.store.row)


def _render_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``render``'s keyword arguments as ``RenderConfig`` fields: the tiling and inference ones
    (``overlap=32``, ``device="cpu"``) gathered into their own configs, input and output normalised."""
    for name, cls in (("tiles", TileConfig), ("infer", InferConfig)):
        own = {f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls) if f.name in kwargs}
        if own:
            kwargs[name] = cls(**own)
    if "input" in kwargs:
        src = kwargs["input"]
        kwargs["input"] = tuple(map(str, src)) if isinstance(src, list | tuple) else str(src)
    if "output_dir" in kwargs:
        out = kwargs["output_dir"]
        kwargs["output_dir"] = out if isinstance(out, str) and is_url(out) else Path(out)
    return kwargs
