"""Run planned blocks: in-process, on a local Dask cluster, or on any cluster by address.

Tasks carry only small value objects (the job and a block's windows); workers read their
own input windows, keep one model per process, and write their block into the zarr store.
No pixels pass through the scheduler.  A bounded number of tasks is in flight, so the
client's memory does not grow with the raster.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geopix.blend import Accumulator, bilinear, to_uint8
from geopix.config import InferConfig
from geopix.errors import ClusterError
from geopix.plan import Block, RenderPlan
from geopix.read import RasterInfo, WorkGrid, WorkReader, configure_gdal, read_source_mask
from geopix.write import StoreSpec, write_block


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs besides the block itself; small and picklable."""

    info: RasterInfo
    grid: WorkGrid
    plan: RenderPlan
    model_path: str
    store: StoreSpec
    infer: InferConfig = field(default_factory=InferConfig)
    output_on_work: bool = False
    aoi_wkb: bytes | None = None  # AOI in the raster's CRS
    #: Share predictions of tiles on block borders through files beside the store, so a
    #: neighbouring block reads them instead of running the model again.
    cache_tiles: bool = True
    out_transform: tuple[float, ...] | None = None  # output grid affine (for the AOI mask)


TILE_CACHE = "geopix_tiles"


class TileCache:
    """Predictions of border tiles, one ``.npy`` file each (float32, exact).

    A prediction is a pure function of the tile's pixels, so a cached one equals a fresh one
    bit for bit; two blocks writing the same tile write the same bytes (atomic rename).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, ij: tuple[int, int]) -> Path:
        return self.root / f"{ij[0]}_{ij[1]}.npy"

    def get(self, ij: tuple[int, int]) -> np.ndarray | None:
        try:
            return np.load(self._path(ij))
        except (FileNotFoundError, ValueError, OSError):
            return None

    def put(self, ij: tuple[int, int], pred: np.ndarray) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{ij[0]}_{ij[1]}.{os.getpid()}.{threading.get_ident()}.npy"
        np.save(tmp, np.ascontiguousarray(pred, dtype=np.float32))
        tmp.replace(self._path(ij))


def cache_friendly_order(blocks: list[Block]) -> list[Block]:
    """Checkerboard order: blocks of one colour first, so the others find every shared tile done."""
    return sorted(blocks, key=lambda b: ((b.index[0] + b.index[1]) % 2, b.index))


# ---- one worker process ---------------------------------------------------------------------
_MODELS: dict[tuple[str, str, int | None, str], object] = {}
_MODELS_LOCK = threading.Lock()


def get_predictor(model_path: str, infer: InferConfig):
    """Load the model once per process (and per device/threads/precision setting).

    Threads of one worker share the model: a forward pass in eval mode keeps no state.
    """
    import torch

    from geopix.infer import Predictor
    from geopix.models.checkpoint import load_checkpoint

    key = (model_path, infer.device, infer.threads, infer.precision)
    with _MODELS_LOCK:
        if infer.threads and torch.get_num_threads() != infer.threads:
            torch.set_num_threads(infer.threads)
        pred = _MODELS.get(key)
        if pred is None:
            pred = Predictor.from_loaded(
                load_checkpoint(model_path), infer.device, infer.channels_last, infer.precision
            )
            _MODELS[key] = pred
    return pred


def _worker_precision(precision: str, device: str) -> str:
    from geopix.infer import resolve_device, resolve_precision

    return resolve_precision(precision, resolve_device(device))


def cluster_precision(infer: InferConfig, client=None) -> str:
    """Resolve ``--precision auto`` once for the whole render, so every worker computes alike.

    bf16 only when *every* worker runs it natively; one fp32-only worker makes it fp32.
    """
    if infer.precision != "auto":
        return infer.precision
    if client is None:
        return _worker_precision(infer.precision, infer.device)
    answers = set(client.run(_worker_precision, infer.precision, infer.device).values())
    return answers.pop() if len(answers) == 1 else "fp32"


_READERS: dict[int, tuple[tuple, WorkReader]] = {}
_READERS_LOCK = threading.Lock()


def get_reader(info: RasterInfo, grid: WorkGrid) -> WorkReader:
    """This thread's open reader of ``info`` on ``grid``, kept between blocks.

    A block's window plus halo touches up to 4×4 of the source's 512² blocks; keeping the
    dataset open lets GDAL's block cache serve the ones the thread's previous blocks decoded
    (a fresh handle per block decoded 3–4× the pixels it used).  One reader per thread: a
    new job's raster replaces the previous one.
    """
    try:
        st = os.stat(info.path)
        key = (info, grid, st.st_mtime_ns, st.st_size)  # a rewritten file gets a fresh handle
    except OSError:  # a URL, /vsi… name or VRT: the name is the key
        key = (info, grid, None, None)
    tid = threading.get_ident()
    with _READERS_LOCK:
        held = _READERS.get(tid)
    if held is not None and held[0] == key:
        return held[1]
    configure_gdal()  # this worker's remote-read settings (its environment's own values win)
    reader = WorkReader(info, grid)
    with _READERS_LOCK:
        old = _READERS.get(tid)
        _READERS[tid] = (key, reader)
    if old is not None:
        old[1].close()
    return reader


def close_readers() -> None:
    """Close every thread's reader (after a render in this process, when no task runs)."""
    with _READERS_LOCK:
        held = list(_READERS.values())
        _READERS.clear()
    for _, reader in held:
        reader.close()


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def process_block(job: BlockJob, block: Block) -> dict[str, float]:
    """Read, infer, blend, resample, mask and write one output block; return its timings."""
    t = {"load": 0.0, "read": 0.0, "infer": 0.0, "blend": 0.0, "write": 0.0}
    t0 = time.perf_counter()
    predictor = get_predictor(job.model_path, job.infer)
    t["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = job.plan
    grid = plan.grid
    data, valid = get_reader(job.info, job.grid).read(block.read)
    t["read"] += time.perf_counter() - t0

    acc = Accumulator(block.work, 3, plan.tile, plan.overlap)
    cache = TileCache(Path(job.store.path) / TILE_CACHE) if job.cache_tiles else None
    todo, preds = [], {}
    for ij in block.tiles:
        win = grid.window(*ij)
        sl = win.relative_to(block.read)
        if not valid[sl].any():
            continue
        shared = win.intersection(block.work) != win  # a neighbouring block needs it too
        cached = cache.get(ij) if cache is not None and shared else None
        if cached is not None:
            preds[ij] = cached
        else:
            todo.append((ij, sl, shared))
    bs = job.infer.batch_size
    for batch in _batches(todo, bs):
        t1 = time.perf_counter()
        x = np.zeros((bs, 3, plan.tile, plan.tile), dtype=np.float32)  # fixed shape: same kernels
        for k, (_, sl, _) in enumerate(batch):
            x[k] = data[(slice(None), *sl)]
        pred = predictor.predict(x)
        t["infer"] += time.perf_counter() - t1
        for k, (ij, _, shared) in enumerate(batch):
            preds[ij] = pred[k]
            if cache is not None and shared:
                cache.put(ij, pred[k])
    t2 = time.perf_counter()
    for ij in block.tiles:  # always the global order, whichever tiles came from the cache
        if ij in preds:
            acc.add(grid.window(*ij), preds[ij])
    t["blend"] += time.perf_counter() - t2

    t3 = time.perf_counter()
    values, covered = acc.result()
    if job.output_on_work or plan.resampling.identity:
        rgb = values[(slice(None), *block.out.relative_to(block.work))]
        mask = valid[block.out.relative_to(block.read)] & covered[block.out.relative_to(block.work)]
    else:
        rgb = bilinear(values, block.work, plan.resampling, block.out)
        cov = bilinear(covered[None].astype(np.float32), block.work, plan.resampling, block.out)[0] > 0.5
        mask = cov & read_source_mask(job.info, block.out)
    if job.aoi_wkb is not None:
        mask &= _aoi_mask(job, block)
    out = np.zeros((4, block.out.height, block.out.width), dtype=np.uint8)
    out[:3] = np.where(mask, to_uint8(rgb), 0)
    out[3] = mask.astype(np.uint8) * 255
    t["blend"] += time.perf_counter() - t3
    t4 = time.perf_counter()
    write_block(job.store, block.out, out, block.index)
    t["write"] += time.perf_counter() - t4
    return {
        **t,
        "tiles": float(len(todo)),
        "cached": float(len(preds) - len(todo)),
        "skipped": float(len(block.tiles) - len(preds)),
        "pixels": float(block.out.size),
    }


def _aoi_mask(job: BlockJob, block: Block) -> np.ndarray:
    from rasterio.features import geometry_mask
    from rasterio.transform import Affine
    from rasterio.windows import Window as RioWindow
    from rasterio.windows import transform as window_transform
    from shapely import wkb

    geom = wkb.loads(job.aoi_wkb)
    tr = window_transform(
        RioWindow(block.out.col, block.out.row, block.out.width, block.out.height), Affine(*job.out_transform)
    )
    return geometry_mask([geom], out_shape=(block.out.height, block.out.width), transform=tr, invert=True)


# ---- the client side -----------------------------------------------------------------------
ProgressFn = Callable[[Block, dict[str, float]], None]


def run_sync(job: BlockJob, blocks: Iterable[Block], on_done: ProgressFn) -> None:
    """In this process, one block after another (tests, tiny rasters, debugging)."""
    for block in blocks:
        on_done(block, process_block(job, block))


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 2))


#: Environment variable naming a scheduler when neither --scheduler nor --scheduler-file is given
#: (the same name Dask itself reads).
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
#: How long to wait for a remote scheduler to have at least one worker (seconds).
WORKER_WAIT_ENV = "GEOPIX_WORKER_WAIT"
#: Packages whose versions must agree between client and workers: a mismatch in the first group
#: breaks (de)serialisation of tasks, in ``geopix`` it can change pixels, in ``torch`` too
#: (compared without the ``+cpu``/``+cu126`` build tag, so CPU and GPU workers can mix).
_SERIALISATION_PACKAGES = ("python", "dask", "distributed", "cloudpickle", "msgpack")
_WORKER_PACKAGES = ("geopix", "torch")


def resolve_scheduler(scheduler: str | None, scheduler_file: str | Path | None = None) -> str | None:
    """The cluster to use: ``--scheduler``, else ``--scheduler-file``, else ``$DASK_SCHEDULER_ADDRESS``.

    ``None`` means a local cluster; ``"sync"`` means in this process.
    """
    if scheduler and scheduler_file:
        raise ClusterError("give either --scheduler or --scheduler-file, not both")
    if scheduler:
        return scheduler
    if scheduler_file:
        if not Path(scheduler_file).is_file():
            raise ClusterError(
                f"--scheduler-file {scheduler_file} does not exist; `dask scheduler --scheduler-file FILE` writes it"
            )
        return str(scheduler_file)
    return os.environ.get(SCHEDULER_ENV) or None


def _comparable(pkg: str, version: str | None) -> str | None:
    if version is None:
        return None
    if pkg == "torch":
        return version.split("+")[0]
    if pkg == "python":
        return ".".join(version.split(".")[:2])
    return version


def version_mismatches(versions: dict) -> list[str]:
    """Lines naming each package whose version differs between this client and the cluster.

    ``versions`` is what ``Client.get_versions(packages=["geopix", "torch"])`` returns.  Pure, so
    it is tested without a cluster.
    """
    client = versions["client"]["packages"]
    problems = []
    nodes = {"scheduler": versions.get("scheduler") or {}}
    nodes.update({f"worker {addr}": v or {} for addr, v in (versions.get("workers") or {}).items()})
    for name, info in nodes.items():
        pkgs = info.get("packages", {})
        wanted = _SERIALISATION_PACKAGES + (() if name == "scheduler" else _WORKER_PACKAGES)
        for pkg in wanted:
            mine, theirs = _comparable(pkg, client.get(pkg)), _comparable(pkg, pkgs.get(pkg))
            if mine != theirs:
                problems.append(f"{name}: {pkg} {theirs or 'MISSING'} (client has {mine or 'MISSING'})")
    return problems


def check_cluster(client, wait_s: float | None = None) -> None:
    """Fail early and clearly instead of hanging (no workers) or failing in a task (version skew)."""
    if wait_s is None:
        wait_s = float(os.environ.get(WORKER_WAIT_ENV, "120"))
    try:
        client.wait_for_workers(1, timeout=wait_s)
    except TimeoutError as exc:
        raise ClusterError(
            f"the Dask scheduler at {client.scheduler.address} has no workers after {wait_s:.0f} s; "
            f"start some with `dask worker {client.scheduler.address}` (or raise ${WORKER_WAIT_ENV})"
        ) from exc
    problems = version_mismatches(client.get_versions(packages=list(_WORKER_PACKAGES)))
    if problems:
        raise ClusterError(
            "the cluster runs other package versions than this client: "
            + "; ".join(problems[:6])
            + (f" (+{len(problems) - 6} more)" if len(problems) > 6 else "")
            + "; install the same versions on the workers"
        )


def dashboard_link(client) -> str | None:
    """The Dask dashboard URL, or None when the scheduler runs without one."""
    try:
        return client.dashboard_link
    except (KeyError, AttributeError, TypeError):
        return None


def connect(
    scheduler: str | None,
    workers: int | None,
    announce: Callable[[str], None] | None = None,
):
    """``(client, cluster_or_None)``: to ``scheduler`` (address or scheduler file), else a LocalCluster.

    A remote cluster is checked (has workers, same versions) before any task is sent; with
    ``announce`` the dashboard link is passed to it once.
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        timeout = dask.config.get("distributed.comm.timeouts.connect")
        is_file = scheduler.endswith(".json") or Path(scheduler).is_file()
        try:
            if is_file:
                client = Client(scheduler_file=scheduler, timeout=timeout)
            else:
                client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one with `dask scheduler` "
                f"or leave --scheduler/--scheduler-file/${SCHEDULER_ENV} out to use a local cluster"
            ) from exc
        try:
            check_cluster(client)
        except BaseException:
            client.close()
            raise
        cluster = None
    else:
        try:
            import bokeh  # noqa: F401  (the dashboard needs it)

            dashboard: str | None = "127.0.0.1:0"  # ephemeral port: several renders may run at once
        except ImportError:
            dashboard = None
        # The default (workers None): one in-process worker with a task thread per core.
        # Nothing to spawn, the model is loaded once, and while one thread runs the generator
        # the other reads, blends and writes (measured: 2 threads × 1 torch thread run the
        # generator as fast as 1 × 2, so the I/O comes for free).  --workers N: N processes.
        in_process = workers is None
        cluster = LocalCluster(
            n_workers=1 if in_process else workers,
            threads_per_worker=(os.cpu_count() or 1) if in_process else 1,
            processes=not in_process,
            dashboard_address=dashboard,
            silence_logs=40,
        )
        client = Client(cluster)
    link = dashboard_link(client)
    if announce is not None and link:
        announce(f"Dask dashboard: {link}")
    return client, cluster


def run_dask(job: BlockJob, blocks: Iterable[Block], on_done: ProgressFn, client, max_in_flight: int) -> None:
    """Submit blocks with back-pressure; each finished block is reported once."""
    from distributed import as_completed

    block_iter = iter(blocks)
    pending = {}

    def submit_next() -> bool:
        block = next(block_iter, None)
        if block is None:
            return False
        fut = client.submit(
            process_block,
            job,
            block,
            pure=False,
            retries=3,
            key=f"geopix-block-{block.index[0]}-{block.index[1]}-{time.time_ns()}",
        )
        pending[fut.key] = block
        ac.add(fut)
        return True

    ac = as_completed(loop=client.loop)  # this client's loop, not the default client's (renders in threads)
    for _ in range(max_in_flight):
        if not submit_next():
            break
    for fut in ac:
        block = pending.pop(fut.key)
        stats = fut.result()
        fut.release()
        on_done(block, stats)
        submit_next()


def plan_blocks(plan: RenderPlan, keep: Callable[[Block], bool] | None = None) -> list[Block]:
    return [b for b in plan.blocks() if keep is None or keep(b)]
