"""The web-tile pyramid build: a map GeoTIFF cut into a Web-Mercator XYZ pyramid on the cluster.

Which zooms and tiles a map needs is ``geopix.zooms``; cutting a tile is ``geopix.tilecut``; the
output formats (a tile folder, PMTiles or MBTiles), the tile codecs and the TileJSON live in
``geopix.tilesets``.  This module runs the build:

* One Dask task per *meta-tile* at the max zoom: the tiles under one zoom ``max - 3`` parent
  (8×8 tiles, 2048² px at 256 px), so a task reads one window.
* **Lower zooms** level by level, each parent from the children the level below wrote.
* Tiles are staged as files in ``OUT.partial`` (folder output) or ``OUT.partial.d`` (archives, packed at the end into
  ``OUT.partial``); the final name appears only by a rename once everything is complete.

Workers on a remote ``--scheduler`` need the input and output paths on a shared filesystem,
as for ``geopix render``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from geopix.cluster import open_cluster, run_tasks
from geopix.config import ProgressFn
from geopix.errors import (
    EmptyRasterError,
    TileFormatError,
    ZoomRangeError,
)
from geopix.output import LOCK_NAME, check_output, hold_lock, refuse_foreign, refuse_input
from geopix.source import url_of
from geopix.tilecut import RERUN_TILES, TileJob, reduce_group, render_group
from geopix.tilesets import folder, mbtiles, output_kind, pmtiles
from geopix.tilesets.codec import TILE_FORMATS, TileFormat
from geopix.tilesets.tilejson import attribution_for, make_tilejson, tiles_template
from geopix.write import disk_full_is_an_error
from geopix.zooms import (
    MAX_ZOOM_LIMIT,
    MapSource,
    auto_maxzoom,
    auto_minzoom,
    group_by_ancestor,
    has_invalid_pixels,
    inspect_map,
    meta_groups,
    tile_range,
)

log = logging.getLogger(__name__)

TILE_SIZES = (256, 512)
WRITERS = {"pmtiles": pmtiles.write, "mbtiles": mbtiles.write}


# ---- configuration and result ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PyramidConfig:
    """How to cut the pyramid; ``None`` zooms are chosen from the raster (see module doc)."""

    minzoom: int | None = None
    maxzoom: int | None = None
    format: TileFormat = "png"
    tile_size: int = 256
    overwrite: bool = False
    quality: int = 90  # webp / jpg
    meta_level: int = 3  # a max-zoom task covers the 2**meta_level × 2**meta_level tiles of one parent
    name: str | None = None
    attribution: str | None = None
    base_url: str | None = None  # where a folder will be hosted: its TileJSON gets absolute tile URLs

    def __post_init__(self) -> None:
        if self.format not in TILE_FORMATS:
            raise TileFormatError(f"--format {self.format!r} is unknown; choose one of {', '.join(TILE_FORMATS)}")
        if self.tile_size not in TILE_SIZES:
            raise TileFormatError(f"--tile-size {self.tile_size} must be 256 or 512")
        for label, z in (("min", self.minzoom), ("max", self.maxzoom)):
            if z is not None and not 0 <= z <= MAX_ZOOM_LIMIT:
                raise ZoomRangeError(f"{label} zoom {z} is outside 0..{MAX_ZOOM_LIMIT}")
        if self.minzoom is not None and self.maxzoom is not None and self.minzoom > self.maxzoom:
            raise ZoomRangeError(f"--zoom {self.minzoom}-{self.maxzoom}: the first zoom must not exceed the second")
        if not 1 <= self.quality <= 100:
            raise TileFormatError(f"quality {self.quality} must be within 1..100")
        if not 0 <= self.meta_level <= 6:
            raise TileFormatError(f"meta_level {self.meta_level} must be within 0..6")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise TileFormatError(
                f"--base-url {self.base_url!r} must be an absolute http(s) URL, e.g. https://example.org/tiles/"
            )


def parse_zoom(text: str) -> tuple[int, int]:
    """``"12-18"`` → ``(12, 18)``; ``"15"`` → ``(15, 15)``."""
    parts = text.strip().split("-")
    try:
        if len(parts) == 1:
            lo = hi = int(parts[0])
        elif len(parts) == 2:
            lo, hi = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise ZoomRangeError(f"--zoom {text!r} must look like 12-18 or 15") from None
    if not (0 <= lo <= MAX_ZOOM_LIMIT and 0 <= hi <= MAX_ZOOM_LIMIT) or lo > hi:
        raise ZoomRangeError(f"--zoom {text!r} must be MIN-MAX with 0 <= MIN <= MAX <= {MAX_ZOOM_LIMIT}")
    return lo, hi


@dataclass(frozen=True)
class PyramidResult:
    """What ``build_pyramid`` wrote."""

    path: Path
    kind: str  # dir | pmtiles | mbtiles
    format: str
    tile_size: int
    minzoom: int
    maxzoom: int
    bounds: tuple[float, float, float, float]  # lon/lat
    tiles_per_zoom: dict[int, int]
    bytes: int
    seconds: float
    tilejson: dict = field(default_factory=dict)

    @property
    def tiles(self) -> int:
        return sum(self.tiles_per_zoom.values())


def zoom_range(src: MapSource, config: PyramidConfig) -> tuple[int, int]:
    maxz = (
        config.maxzoom
        if config.maxzoom is not None
        else auto_maxzoom(src.ground_resolution_m, src.centre_lat, config.tile_size)
    )
    minz = config.minzoom if config.minzoom is not None else auto_minzoom(src, maxz, config.tile_size)
    if minz > maxz:
        raise ZoomRangeError(f"min zoom {minz} exceeds max zoom {maxz}; pass --zoom MIN-MAX")
    return minz, maxz


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# ---- what an output may replace --------------------------------------------------------------
MAGIC = {"pmtiles": b"PMTiles", "mbtiles": b"SQLite format 3\x00"}


def is_tile_set(path: Path) -> bool:
    """Whether ``path`` is a tile set ``geopix tiles`` writes: a folder of ``tilejson.json`` and
    zoom folders, or a PMTiles / MBTiles archive (by its first bytes)."""
    if path.is_dir():
        names = [p for p in path.iterdir() if p.name != LOCK_NAME]
        return any(p.name == folder.TILEJSON_NAME for p in names) and all(
            p.name == folder.TILEJSON_NAME or (p.name.isdigit() and p.is_dir()) for p in names
        )
    kind = output_kind(path)
    if kind == "dir" or not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(len(MAGIC[kind])) == MAGIC[kind]


def tiles_target(out: Path) -> Path:
    """``out`` as a path with a name (``.`` and ``..`` made absolute); a root is refused."""
    out = Path(out)
    if out.name in ("", ".", ".."):
        out = Path(os.path.abspath(out))
    if out.name == "":
        raise TileFormatError(f"OUT {out} is a filesystem root; name a new folder or a .pmtiles / .mbtiles file")
    return out


def check_tiles_output(out: Path, overwrite: bool, inputs: Iterable[str | Path] = ()) -> None:
    """May web tiles be written at ``out``?  Never over an input, never over something that is
    not a tile set (``--overwrite`` replaces only that), and not over a tile set unless asked."""
    refuse_input([out], [Path(p) for p in inputs if "://" not in str(p) and not str(p).startswith("/vsi")], "OUT")
    refuse_foreign(out, is_tile_set, "a tile set", "OUT")
    check_output(out.parent, [out.name], overwrite, option="OUT")


# ---- the public entry point -----------------------------------------------------------------
def build_pyramid(
    map_path: str | Path,
    out: Path,
    config: PyramidConfig,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    on_progress: ProgressFn | None = None,
    dashboard: bool = False,
) -> PyramidResult:
    """Cut ``map_path`` into a Web-Mercator pyramid at ``out`` (folder, ``.pmtiles`` or ``.mbtiles``).

    ``scheduler="sync"`` runs in this process; ``None`` starts a local Dask cluster of
    ``workers`` processes; anything else is a scheduler address or scheduler file.
    ``on_progress("tiles zN", done, total)`` counts candidate tiles (written or empty).
    ``dashboard``: a local cluster serves the Dask dashboard and its link is logged.
    """
    t0 = time.perf_counter()
    out = tiles_target(out)
    src = inspect_map(map_path)
    shown = url_of(src.path)  # for messages: a URL as typed, credentials redacted
    kind = output_kind(out)
    if config.format == "jpg" and has_invalid_pixels(src):
        raise TileFormatError(
            f"--format jpg has no transparency, but {shown} has masked (nodata) pixels; use png or webp"
        )
    minz, maxz = zoom_range(src, config)
    with contextlib.ExitStack() as held:
        held.enter_context(hold_lock(out.parent, "OUT"))  # the folder that gets OUT and OUT.partial
        if out.is_dir() and not out.is_symlink():
            held.enter_context(hold_lock(out, "OUT"))  # a tile set being replaced: not while a run writes it
        check_tiles_output(out, config.overwrite, [src.path])  # under the lock: no other run changes OUT now
        return _build(src, out, kind, (minz, maxz), config, scheduler, workers, dashboard, on_progress, t0)


def _build(
    src: MapSource,
    out: Path,
    kind: str,
    zooms: tuple[int, int],
    config: PyramidConfig,
    scheduler: str | None,
    workers: int | None,
    dashboard: bool,
    on_progress: ProgressFn | None,
    t0: float,
) -> PyramidResult:
    """The build itself, under the output's lock."""
    minz, maxz = zooms
    shown = url_of(src.path)  # for messages: a URL as typed, credentials redacted
    file_name = src.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    partial = out.with_name(out.name + ".partial")
    staging = partial if kind == "dir" else out.with_name(out.name + ".partial.d")
    for p in {partial, staging}:
        _remove(p)
    staging.mkdir(parents=True)
    job = TileJob(src, str(staging), config.format, config.tile_size, config.quality)
    counts: dict[int, int] = {}
    total_bytes = 0

    def candidates(z: int) -> int:
        x0, y0, x1, y1 = tile_range(src.bounds, z)
        return (x1 - x0 + 1) * (y1 - y0 + 1)

    total, done = sum(candidates(z) for z in range(minz, maxz + 1)), [0]

    def advance(n: int, z: int) -> None:
        done[0] += n
        if on_progress is not None:
            on_progress(f"tiles z{z}", done[0], total)

    try:
        with open_cluster(scheduler, workers, log.info if dashboard else None, dashboard) as client:
            written_above: set[tuple[int, int]] = set()
            for z in range(maxz, minz - 1, -1):
                written: set[tuple[int, int]] = set()
                nbytes = [0]

                def on_done(group, got, z=z, written=written, nbytes=nbytes) -> None:
                    written.update(got[0])
                    nbytes[0] += got[1]
                    advance(len(group), z)

                if z == maxz:
                    groups: Iterable = meta_groups(src.bounds, z, config.meta_level)
                    run_tasks(render_group, (job, z), groups, on_done, client, label=f"tiles-z{z}")
                else:
                    parents = sorted({(x // 2, y // 2) for x, y in written_above}, key=lambda p: (p[1], p[0]))
                    groups = group_by_ancestor(parents, config.meta_level)
                    run_tasks(reduce_group, (job, z), groups, on_done, client, label=f"tiles-z{z}")
                    advance(candidates(z) - len(parents), z)
                counts[z] = len(written)
                total_bytes += nbytes[0]
                written_above = written
                if z == maxz and not written:
                    raise EmptyRasterError(f"{shown} has no valid pixels at zoom {z}; nothing to tile")
    except BaseException:
        _remove(staging)
        raise

    tj = make_tilejson(
        name=config.name or Path(file_name).stem,
        tiles_url=tiles_template(config.base_url, config.format) if config.base_url else "{z}/{x}/{y}." + config.format,
        bounds=src.bounds,
        minzoom=minz,
        maxzoom=maxz,
        attribution=attribution_for(src.tags, src.path, config.attribution),
        tile_size=config.tile_size,
        fmt=config.format,
        description=f"geopix web tiles of {file_name}",
    )
    try:
        with disk_full_is_an_error(out.parent, RERUN_TILES):
            if kind == "dir":
                folder.write_tilejson(staging, tj)
            else:
                WRITERS[kind](partial, folder.iter_tiles(staging, range(minz, maxz + 1), config.format), tj)
                _remove(staging)
        _remove(out)
        partial.replace(out)
    except BaseException:
        _remove(staging)
        _remove(partial)
        raise
    return PyramidResult(
        path=out,
        kind=kind,
        format=config.format,
        tile_size=config.tile_size,
        minzoom=minz,
        maxzoom=maxz,
        bounds=src.bounds,
        tiles_per_zoom=dict(sorted(counts.items())),
        bytes=total_bytes,
        seconds=time.perf_counter() - t0,
        tilejson=tj,
    )
