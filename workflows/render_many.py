"""Render many GeoTIFFs on one shared Dask cluster: one map per scene, or one mosaic.

    python workflows/render_many.py scenes/ -o out/ --model sat2map                # out/<stem>/map.tif each
    python workflows/render_many.py a.tif b.tif -o out/ --mosaic                   # out/mosaic/map.tif
    python workflows/render_many.py scenes/ -o out/ --scheduler tcp://HOST:8786    # an existing cluster

Why one cluster: starting workers (and loading the model into each) costs seconds to minutes;
a cluster shared by all scenes pays it once, and the model stays loaded in every worker
process between scenes (``geopix.execute.get_predictor`` caches it per process).  Up to
``--parallel`` scenes are submitted at once, so one scene's client-side COG conversion overlaps
the next scene's inference and the workers never idle between scenes.

``--mosaic`` builds a GDAL VRT over all scenes (``gdalbuildvrt``; they must share CRS and band
count, checked first: a scene in another CRS is an error, never silently left out) and renders
it as one input: no seams between scenes, one output.  Workers need the scenes, the VRT
(written into the output folder) and the output on a shared path.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from geopix.cli.progress import progress_bar
from geopix.config import RenderConfig, TileConfig
from geopix.errors import GeopixError, InputNotFoundError
from geopix.pipeline import render
from geopix.publish import RenderResult

SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2")


def find_scenes(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand folders into their rasters (sorted); keep files as given."""
    scenes: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            scenes += sorted(q for q in p.iterdir() if q.suffix.lower() in SUFFIXES)
        elif p.is_file():
            scenes.append(p)
        else:
            raise InputNotFoundError(f"{p} is neither a raster nor a folder of rasters")
    if not scenes:
        raise InputNotFoundError(f"no rasters ({', '.join(SUFFIXES)}) in {', '.join(map(str, inputs))}")
    stems = [s.stem for s in scenes]
    if len(set(stems)) != len(stems):
        raise GeopixError("two scenes share a file name; their outputs would collide (rename one)")
    return scenes


def check_mosaic(scenes: Sequence[Path]) -> None:
    """Refuse scenes that cannot share one VRT: gdalbuildvrt only warns and leaves out a scene
    whose CRS or band count differs from the first, so the mosaic silently lacked it."""
    import rasterio

    with rasterio.open(scenes[0]) as ds:
        crs, count = ds.crs, ds.count
    for scene in scenes[1:]:
        with rasterio.open(scene) as ds:
            if ds.crs != crs:
                raise GeopixError(
                    f"--mosaic: {scene} is in {ds.crs} but {scenes[0]} is in {crs}; reproject it first "
                    f"(gdalwarp -t_srs {crs} …) or render the scenes one by one (without --mosaic)"
                )
            if ds.count != count:
                raise GeopixError(f"--mosaic: {scene} has {ds.count} bands but {scenes[0]} has {count}")


def build_vrt(scenes: Sequence[Path], dst: Path) -> Path:
    """A mosaic VRT over ``scenes`` with absolute paths (workers may run elsewhere)."""
    check_mosaic(scenes)
    exe = shutil.which("gdalbuildvrt")
    if exe is None:
        raise GeopixError("--mosaic needs gdalbuildvrt (GDAL command-line tools) on PATH")
    dst.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [exe, "-q", "-overwrite", str(dst), *(str(Path(s).resolve()) for s in scenes)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise GeopixError(f"gdalbuildvrt failed: {proc.stderr.strip()} (scenes must share CRS and band count)")
    return dst


def _start_cluster(workers: int | None):
    """The local cluster ``geopix render --workers N`` starts (loopback only, worker logs silenced),
    kept for all scenes; its client only waited for the workers to join (each render connects its own)."""
    from geopix.cluster import connect, default_workers

    client, cluster = connect(None, workers or default_workers(), dashboard=True)
    client.close()
    return cluster


def render_many(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    *,
    model: str = "sat2map",
    scheduler: str | None = None,
    workers: int | None = None,
    mosaic: bool = False,
    parallel: int = 2,
    tiles: TileConfig | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, RenderResult]:
    """Render each scene into ``out_dir/<stem>/`` (or the mosaic into ``out_dir/mosaic/``).

    With ``scheduler=None`` one LocalCluster is started for all scenes and closed at the end.
    """
    out_dir = Path(out_dir)
    scenes = find_scenes(inputs)
    jobs = {"mosaic": build_vrt(scenes, out_dir / "mosaic.vrt")} if mosaic else {s.stem: s for s in scenes}
    cluster = None
    if scheduler is None:
        cluster = _start_cluster(workers)
        scheduler = cluster.scheduler_address
        print(f"Dask dashboard: {cluster.dashboard_link}", file=sys.stderr)

    def one(name: str) -> RenderResult:
        cfg = RenderConfig(
            input=jobs[name],
            output_dir=out_dir / name,
            model=model,
            tiles=tiles or TileConfig(),
            scheduler=scheduler,
            overwrite=overwrite,
        )
        with progress_bar(progress and parallel == 1) as bar:
            return render(cfg, on_progress=bar)

    try:
        with ThreadPoolExecutor(max(1, parallel)) as pool:
            results = dict(zip(jobs, pool.map(one, jobs), strict=True))
    finally:
        if cluster is not None:
            cluster.close()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("inputs", nargs="+", help="GeoTIFFs and/or folders of GeoTIFFs")
    ap.add_argument("-o", "--output", required=True, help="output folder")
    ap.add_argument("-m", "--model", default="sat2map")
    ap.add_argument("--scheduler", default=None, help="existing scheduler address or file (default: a local cluster)")
    ap.add_argument("--workers", type=int, default=None, help="local workers when no --scheduler")
    ap.add_argument("--mosaic", action="store_true", help="render all scenes as one VRT mosaic")
    ap.add_argument("--parallel", type=int, default=2, help="scenes in flight at once")
    ap.add_argument("--tile-size", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=TileConfig().overlap)
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        results = render_many(
            args.inputs,
            args.output,
            model=args.model,
            scheduler=args.scheduler,
            workers=args.workers,
            mosaic=args.mosaic,
            parallel=args.parallel,
            tiles=TileConfig(args.tile_size, args.overlap, args.chunk_size),
            overwrite=args.overwrite,
        )
    except GeopixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for name, r in results.items():
        print(f"{name}: {r.map_path} ({r.width}×{r.height} px, {r.tiles_run} tiles, {r.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
