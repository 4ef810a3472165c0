"""A finished map made visible: ``render.json``, the web tiles, and for an object-store ``-o`` the uploads.

The render steps (``geopix.pipeline``) hand over once ``map.tif`` is built; from here on a
render only publishes.  ``render.json`` records what ran; with ``--xyz`` it is written *before*
the pyramid starts with the tiles marked unfinished, so a rerun of the same command after a
failed pyramid finds the map (``pending_web_tiles`` / ``pending_remote_tiles``) and builds only
the tiles.  With an object-store ``-o`` the files are built in a local folder and each is
uploaded atomically once complete (``publish_remote``): nothing partial appears under a final key.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from geopix import __version__, pyramid
from geopix.cluster import resolve_scheduler
from geopix.config import ProgressFn, RenderConfig
from geopix.execute import BlockJob
from geopix.models.registry import resolve_model
from geopix.mosaic import resolve_input
from geopix.read import inspect_raster
from geopix.remote import download, exists, is_url, join, read_bytes, upload_atomic, upload_tree
from geopix.source import redact
from geopix.write import write_manifest

MAP_NAME = "map.tif"


@dataclass(frozen=True)
class RenderResult:
    """What a render produced, and how long it took."""

    map_path: Path | str  # a URL when -o is an object store
    store_path: Path | str | None
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
    def empty(self) -> bool:
        """No tile had a valid input pixel (and no earlier run left blocks): the map is all transparent."""
        return self.tiles_run + self.tiles_cached == 0 and self.blocks_resumed == 0

    @property
    def tiles_per_second(self) -> float:
        return self.tiles_run / self.seconds if self.seconds else 0.0

    @property
    def megapixels_per_second(self) -> float:
        return self.width * self.height / 1e6 / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Computed:
    """The blocks are in the store."""

    job: BlockJob  # as run: precision resolved, colour matched
    blocks: int
    blocks_resumed: int
    stats: dict[str, float]


def model_path(model: str | Path) -> str:
    """The checkpoint's absolute path, as ``render.json`` and the worker job record it."""
    return str(Path(resolve_model(model)).resolve())


def write_render_manifest(
    out_dir: Path, config: RenderConfig, computed: Computed, map_path: Path, xyz: Path | None, t_start: float
) -> dict:
    """``OUT/render.json`` as the map is finished: what ran, and (with ``--xyz``) unfinished tiles."""
    job, stats = computed.job, dict(computed.stats)
    plan = job.plan
    manifest = {
        "geopix": __version__,
        "input": redact(job.info.path),  # a pre-signed URL's signature must not be stored
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
        "blocks": computed.blocks,
        "blocks_resumed": computed.blocks_resumed,
        "store": str(job.store.path) if config.keep_zarr else None,
        "seconds": round(time.perf_counter() - t_start, 3),
        "stage_seconds": {k: round(v, 3) for k, v in stats.items() if k != "pixels"},
    }
    if xyz is not None:
        # Recorded before the pyramid starts: if it fails, the rerun of the same command finds
        # the map and its manifest and builds only the tiles (instead of "map.tif exists").
        manifest["web_tiles"] = {"path": str(xyz), "done": False}
    write_manifest(out_dir / "render.json", manifest)
    return manifest


def pending_web_tiles(config: RenderConfig, out_dir: Path, xyz: Path) -> dict | None:
    """The manifest of an earlier render of this input and model whose web tiles at ``xyz`` are
    not finished (the pyramid failed or was interrupted), or None."""
    try:
        manifest = json.loads((out_dir / "render.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if _unfinished_tiles_of(config, manifest, str(xyz), (out_dir / MAP_NAME).exists()) else None


def _unfinished_tiles_of(config: RenderConfig, manifest: dict, tiles: str, map_there: bool) -> bool:
    """Whether ``manifest`` is a render of ``config``'s input and model, its map there, whose
    web tiles at ``tiles`` were not finished."""
    web = manifest.get("web_tiles") or {}
    if web.get("path") != tiles or web.get("done") or not map_there:
        return False
    info = inspect_raster(resolve_input(config.input), config.bands, config.allow_no_crs)
    return manifest.get("input") == redact(info.path) and manifest.get("model") == model_path(config.model)


def publish_tiles(
    config: RenderConfig,
    out_dir: Path,
    xyz: Path | None,
    manifest: dict,
    t_start: float,
    on_progress: ProgressFn | None,
    resumed: bool = False,
) -> RenderResult:
    """Build the web tiles (when asked), complete ``render.json`` and return the result.

    ``resumed``: the map is an earlier run's; tiles that run left at ``xyz`` are unfinished."""
    map_path = Path(manifest["output"])
    stage_seconds = dict(manifest["stage_seconds"])
    tiles = None
    if xyz is not None:
        t_pyr = time.perf_counter()
        tiles = pyramid.build_pyramid(
            map_path,
            xyz,
            pyramid.PyramidConfig(overwrite=config.overwrite or resumed),
            scheduler=resolve_scheduler(config.scheduler, config.scheduler_file),
            workers=config.workers,
            on_progress=on_progress,
            dashboard=config.dashboard,
        )
        stage_seconds["pyramid"] = round(time.perf_counter() - t_pyr, 3)
        manifest = {**manifest, "web_tiles": {"path": str(tiles.path), "done": True}}
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
        tiles_path=tiles.path if tiles else None,
        precision=manifest["precision"],
    )


# ---- an object-store -o ----------------------------------------------------------------------
def publish_remote(
    config: RenderConfig,
    output: str,
    out_dir: Path,
    computed: Computed,
    map_path: Path,
    xyz: Path | None,
    t_start: float,
    on_progress: ProgressFn | None,
) -> RenderResult:
    """Upload a map just built in ``out_dir``, then (``--xyz``) build and upload its web tiles.

    ``map.tif`` and a ``render.json`` marking the tiles unfinished are uploaded before the
    pyramid starts, so a rerun after a failed pyramid downloads the map and builds only the
    tiles (``resume_remote_tiles``), as a local render does."""
    map_url = publish_file(map_path, output)
    manifest = write_render_manifest(out_dir, config, computed, map_path, xyz, t_start)
    if xyz is not None:
        _publish_manifest(out_dir, output, map_url, join(output, xyz.name), done=False)
    result = publish_tiles(config, out_dir, xyz, manifest, t_start, on_progress)
    return _finish_remote(result, out_dir, output, map_url)


def resume_remote_tiles(
    config: RenderConfig,
    output: str,
    out_dir: Path,
    xyz: Path,
    pending: dict,
    t_start: float,
    on_progress: ProgressFn | None,
) -> RenderResult:
    """An earlier run of this command uploaded the map, not its tiles: download it, build the tiles."""
    map_url = join(output, MAP_NAME)
    download(map_url, out_dir / MAP_NAME)
    manifest = {**pending, "output": str(out_dir / MAP_NAME)}
    result = publish_tiles(config, out_dir, xyz, manifest, t_start, on_progress, resumed=True)
    return _finish_remote(result, out_dir, output, map_url)


def _finish_remote(result: RenderResult, out_dir: Path, output: str, map_url: str) -> RenderResult:
    """Upload the tiles, then the finished ``render.json``; the result names the bucket's URLs."""
    tiles_url = _upload_tiles(result.tiles_path, output) if result.tiles_path else None
    store = _publish_manifest(out_dir, output, map_url, tiles_url, done=True).get("store")
    return dataclasses.replace(result, map_path=map_url, tiles_path=tiles_url, store_path=store)


def _publish_manifest(out_dir: Path, output: str, map_url: str, tiles_url: str | None, done: bool) -> dict:
    """Upload the local ``render.json`` with the bucket's URLs in place of the local paths."""
    manifest = json.loads((out_dir / "render.json").read_text())
    manifest["output"] = map_url
    if tiles_url:
        manifest["web_tiles"] = {"path": tiles_url, "done": done}
    write_manifest(out_dir / "render.json", manifest)
    publish_file(out_dir / "render.json", output)
    return manifest


def pending_remote_tiles(config: RenderConfig, output: str, tiles_url: str) -> dict | None:
    """``pending_web_tiles`` for a bucket: the uploaded ``render.json`` of an earlier render of
    this input and model whose web tiles at ``tiles_url`` are not finished, or None."""
    try:
        manifest = json.loads(read_bytes(join(output, "render.json")))
    except FileNotFoundError:
        return None
    except ValueError:  # not ours, or cut short: not a render to continue
        return None
    map_there = exists(join(output, MAP_NAME))
    return manifest if _unfinished_tiles_of(config, manifest, tiles_url, map_there) else None


def publish_file(local: Path, output: str | Path) -> str | Path:
    """Put a finished file under its final name: it is there already, or uploaded atomically."""
    if not is_url(output):
        return local
    url = join(str(output), local.name)
    upload_atomic(local, url)
    return url


def _upload_tiles(local: Path, output: str) -> str:
    """A tile archive is one atomic upload.  A tile folder cannot be: an earlier attempt's tiles
    are removed, the tiles go up, and its ``tilejson.json`` last, so a reader that finds the
    TileJSON finds every tile."""
    if local.is_file():
        return str(publish_file(local, output))
    url = join(output, local.name)
    upload_tree(local, url, last="tilejson.json")
    return url
