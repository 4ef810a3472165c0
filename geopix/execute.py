"""The worker kernel: one output block from its input window to its zarr chunk.

A task carries only small value objects (the ``BlockJob`` and a block's windows); the worker
reads its own input window, runs the model (loaded once per process), blends, resamples,
masks and writes the block into its own chunk of the store.  No pixels pass through the
scheduler; running the tasks is ``geopix.cluster``'s job.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geopix.aoi import aoi_mask
from geopix.blend import Accumulator, bilinear, to_uint8
from geopix.config import InferConfig
from geopix.models.distribute import worker_checkpoint
from geopix.plan import Block, RenderPlan, Window
from geopix.read import RasterInfo, WorkGrid, WorkReader, read_source_mask
from geopix.write import StoreSpec, disk_full_is_an_error, write_block


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs besides the block itself; small and picklable."""

    info: RasterInfo
    grid: WorkGrid
    plan: RenderPlan
    model_path: str  # on the client; workers that cannot see it get a copy (models.distribute)
    store: StoreSpec
    infer: InferConfig = field(default_factory=InferConfig)
    output_on_work: bool = False
    aoi_wkb: bytes | None = None  # AOI in the raster's CRS
    #: Share predictions of tiles on block borders through files beside the store, so a
    #: neighbouring block reads them instead of running the model again.
    cache_tiles: bool = True
    out_transform: tuple[float, ...] | None = None  # output grid affine (for the AOI mask)
    model_sha256: str = ""  # checked on every worker
    model_name: str | None = None  # a registry name: each worker resolves it in its own install


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
        tmp = self.root / f".{ij[0]}_{ij[1]}.{os.getpid()}.{threading.get_ident()}.npy"
        with disk_full_is_an_error(self.root):
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                np.save(tmp, np.ascontiguousarray(pred, dtype=np.float32))
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            tmp.replace(self._path(ij))


# ---- one worker process ---------------------------------------------------------------------
_MODELS: dict[tuple[str, str, str], object] = {}
_MODELS_LOCK = threading.Lock()


def _task_threads() -> int:
    """How many tasks this Dask worker runs at once (they share its model); 1 outside a worker."""
    from distributed import get_worker

    try:
        return max(1, int(get_worker().state.nthreads))
    except ValueError:  # not in a worker: the synchronous scheduler
        return 1


def get_predictor(model_path: str, infer: InferConfig):
    """Load the model once per process (and per device/precision setting).

    Threads of one worker share the model: a forward pass in eval mode keeps no state.
    Torch's thread count is the process's (``geopix.process``), not the task's.
    """
    from geopix.infer import Predictor
    from geopix.models.checkpoint import load_checkpoint

    key = (model_path, infer.device, infer.precision)
    with _MODELS_LOCK:
        pred = _MODELS.get(key)
        if pred is None:
            pred = Predictor.from_loaded(
                load_checkpoint(model_path), infer.device, infer.channels_last, infer.precision, _task_threads()
            )
            _MODELS[key] = pred
    return pred


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
    reader = WorkReader(info, grid)
    with _READERS_LOCK:
        old = _READERS.get(tid)
        _READERS[tid] = (key, reader)
    if old is not None:
        old[1].close()
    return reader


def close_readers() -> None:
    """Close every thread's reader: only once no task runs in this process any more (after the
    local cluster has closed), or GDAL would free a dataset a worker thread is reading."""
    with _READERS_LOCK:
        held = list(_READERS.values())
        _READERS.clear()
    for _, reader in held:
        reader.close()


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _read_window(pending: list[tuple[tuple[int, int], Window, bool]], out: Window | None) -> Window | None:
    """The work-grid window covering the tiles to run and ``out`` (``None``: nothing to read)."""
    wins = [win for _, win, _ in pending] + ([out] if out is not None else [])
    if not wins:
        return None
    read = wins[0]
    for win in wins[1:]:
        read = read.union(win)
    return read


def process_block(job: BlockJob, block: Block) -> dict[str, float]:
    """Read, infer, blend, resample, mask and write one output block; return its timings."""
    t = {"load": 0.0, "read": 0.0, "infer": 0.0, "blend": 0.0, "write": 0.0}
    t0 = time.perf_counter()
    predictor = get_predictor(worker_checkpoint(job.model_path, job.model_sha256, job.model_name), job.infer)
    t["load"] = time.perf_counter() - t0
    plan = job.plan
    grid = plan.grid
    on_work = job.output_on_work or plan.resampling.identity
    cache = TileCache(Path(job.store.path) / TILE_CACHE) if job.cache_tiles else None
    preds, pending = {}, []
    extent = Window(0, 0, grid.height, grid.width)
    for ij in block.tiles:
        win = grid.window(*ij)
        inside = win.intersection(extent)  # what reaches past the raster's edge is no neighbour's
        shared = inside.intersection(block.work) != inside  # a neighbouring block needs it too
        # A cached tile had data: the block that predicted it read the same pixels.
        cached = cache.get(ij) if cache is not None and shared else None
        if cached is not None:
            preds[ij] = cached
        else:
            pending.append((ij, win, shared))
    t0 = time.perf_counter()
    # Only the pixels of the tiles still to run (and of the output, for its mask): a block whose
    # border tiles its neighbours predicted reads its own 1024² instead of up to 1376², which
    # GDAL decodes from 4 source tiles instead of 16 (it does not cache reads spanning tiles).
    read = _read_window(pending, block.out if on_work else None)
    data, valid = get_reader(job.info, job.grid).read(read) if read is not None else (None, None)
    t["read"] += time.perf_counter() - t0

    acc = Accumulator(block.work, 3, plan.tile, plan.overlap)
    todo = []
    for ij, win, shared in pending:
        sl = win.relative_to(read)
        if valid[sl].any():
            todo.append((ij, sl, shared))
    bs = predictor.tiles_per_call(job.infer.batch_size)
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
    if on_work:
        rgb = values[(slice(None), *block.out.relative_to(block.work))]
        mask = valid[block.out.relative_to(read)] & covered[block.out.relative_to(block.work)]
    else:
        rgb = bilinear(values, block.work, plan.resampling, block.out)
        cov = bilinear(covered[None].astype(np.float32), block.work, plan.resampling, block.out)[0] > 0.5
        mask = cov & read_source_mask(job.info, block.out)
    if job.aoi_wkb is not None:
        mask &= aoi_mask(job.aoi_wkb, job.out_transform, block.out)
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
