"""Web tiles: ``geopix tiles`` vs ``gdal2tiles --xyz`` on the same raster and zoom range.

Prints a side-by-side table (wall time, tiles, bytes) and writes JSON.  Nothing asserts.

    python benchmarks/bench_tiles.py [--input MAP.tif | --size 4096] [--zoom 14-18] [--processes 2]

Without ``--input`` a synthetic map raster (RGB + internal mask, top-left quarter masked,
0.5 m/px, UTM 33N) of ``--size``² pixels is written to a temporary folder.  gdal2tiles comes
from Debian's ``gdal-bin`` (``gdal2tiles`` or ``gdal2tiles.py``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import machine, synthetic_map, write_json


def tree_stats(root: Path, ext: str = "png") -> tuple[int, int, int]:
    """(tiles, bytes, fully transparent tiles) under ``root``."""
    from PIL import Image

    files = list(root.rglob(f"*.{ext}"))
    empty = 0
    for f in files:
        with Image.open(f) as im:
            if im.mode in ("RGBA", "LA") and im.getchannel("A").getextrema()[1] == 0:
                empty += 1
    return len(files), sum(f.stat().st_size for f in files), empty


def run_gdal2tiles(src: Path, out: Path, zoom: str, processes: int) -> dict:
    exe = shutil.which("gdal2tiles") or shutil.which("gdal2tiles.py")
    if exe is None:
        return {"tool": "gdal2tiles", "skipped": "gdal2tiles not installed (apt-get install gdal-bin)"}
    # bilinear: the resampling geopix uses at the max zoom
    cmd = [
        exe,
        "--xyz",
        f"--processes={processes}",
        "-z",
        zoom,
        "-r",
        "bilinear",
        "-w",
        "none",
        "-q",
        str(src),
        str(out),
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    tiles, nbytes, empty = tree_stats(out)
    return {"tool": "gdal2tiles", "version": version, "command": " ".join(cmd), "seconds": seconds,
            "tiles": tiles, "bytes": nbytes, "empty_tiles": empty}  # fmt: skip


def run_geopix(src: Path, out: Path, zoom: str, workers: int, scheduler: str | None) -> dict:
    from geopix.pyramid import PyramidConfig, build_pyramid, parse_zoom

    lo, hi = parse_zoom(zoom)
    t0 = time.perf_counter()
    res = build_pyramid(src, out, PyramidConfig(minzoom=lo, maxzoom=hi), scheduler=scheduler, workers=workers)
    seconds = time.perf_counter() - t0
    tiles, nbytes, empty = tree_stats(out)
    label = "geopix (sync, 1 process)" if scheduler == "sync" else f"geopix (Dask, {workers} workers)"
    return {"tool": label, "seconds": seconds, "tiles": tiles, "bytes": nbytes, "empty_tiles": empty,
            "per_zoom": res.tiles_per_zoom}  # fmt: skip


def compare_tiles(src: Path, gdal_dir: Path, geopix_dir: Path, zoom: str, limit: int = 60) -> dict:
    """Visual quality at max zoom: each tool's tiles against an independent bilinear warp of the
    raster onto the same tile (rasterio.warp.reproject), on tiles both tools wrote."""
    import mercantile
    import rasterio
    from PIL import Image
    from rasterio.warp import Resampling, reproject

    z = int(zoom.split("-")[-1])
    tiles = sorted(p for p in (geopix_dir / str(z)).glob("*/*.png"))
    errs: dict[str, list[float]] = {"gdal2tiles": [], "geopix": []}
    with rasterio.open(src) as ds:
        for p in tiles[:: max(1, len(tiles) // limit)]:
            x, y = int(p.parent.name), int(p.stem)
            g = gdal_dir / str(z) / str(x) / f"{y}.png"
            if not g.exists():
                continue
            b = mercantile.xy_bounds(x, y, z)
            dst_tr = rasterio.transform.from_bounds(b.left, b.bottom, b.right, b.top, 256, 256)
            ref = np.zeros((3, 256, 256), np.float32)
            reproject(rasterio.band(ds, [1, 2, 3]), ref, dst_transform=dst_tr, dst_crs="EPSG:3857",
                      resampling=Resampling.bilinear)  # fmt: skip
            refmask = np.zeros((256, 256), np.uint8)
            reproject(ds.dataset_mask(), refmask, src_transform=ds.transform, src_crs=ds.crs, dst_transform=dst_tr,
                      dst_crs="EPSG:3857", resampling=Resampling.nearest)  # fmt: skip
            ours = np.asarray(Image.open(p).convert("RGBA"), np.float32)
            theirs = np.asarray(Image.open(g).convert("RGBA"), np.float32)
            both = (ours[..., 3] > 0) & (theirs[..., 3] > 0) & (refmask > 0)
            if both.sum() < 100:
                continue
            r = ref.transpose(1, 2, 0)[both]
            errs["geopix"].append(float(np.abs(ours[..., :3][both] - r).mean()))
            errs["gdal2tiles"].append(float(np.abs(theirs[..., :3][both] - r).mean()))
    return {k: round(float(np.mean(v)), 3) if v else None for k, v in errs.items()} | {
        "tiles_compared": len(errs["geopix"])
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, help="map GeoTIFF; default: a synthetic one")
    ap.add_argument("--size", type=int, default=4096, help="synthetic raster side in pixels")
    ap.add_argument("--zoom", default=None, help="zoom range MIN-MAX; default: geopix's automatic range")
    ap.add_argument("--processes", type=int, default=2, help="gdal2tiles processes = geopix Dask workers")
    ap.add_argument("--sync", action="store_true", help="also time geopix in one process")
    ap.add_argument("--json", type=Path, default=Path("bench_tiles.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="geopix-bench-tiles-") as tmp:
        tmp = Path(tmp)
        src = args.input or synthetic_map(tmp / "map.tif", args.size)
        if args.zoom is None:
            from geopix.pyramid import PyramidConfig, zoom_range
            from geopix.zooms import inspect_map

            lo, hi = zoom_range(inspect_map(src), PyramidConfig())
            args.zoom = f"{lo}-{hi}"
        rows = [run_gdal2tiles(src, tmp / "gdal2tiles", args.zoom, args.processes)]
        rows.append(run_geopix(src, tmp / "geopix", args.zoom, args.processes, None))
        if args.sync:
            rows.append(run_geopix(src, tmp / "geopix-sync", args.zoom, 1, "sync"))
        quality = compare_tiles(src, tmp / "gdal2tiles", tmp / "geopix", args.zoom)
        import rasterio

        with rasterio.open(src) as s:
            raster = {"path": str(args.input or f"synthetic {args.size}²"), "size": [s.width, s.height],
                      "crs": str(s.crs), "res": list(s.res)}  # fmt: skip

    facts = machine()
    print(f"raster: {raster['path']} {raster['size'][0]}×{raster['size'][1]} px, {raster['crs']}, "
          f"res {raster['res'][0]:g}; zoom {args.zoom}; {facts['cpu_count']} CPUs")  # fmt: skip
    print(f"{'tool':<28} {'wall s':>8} {'tiles':>7} {'empty':>6} {'MB':>8} {'tiles/s':>8}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['tool']:<28} skipped: {r['skipped']}")
            continue
        print(f"{r['tool']:<28} {r['seconds']:>8.1f} {r['tiles']:>7} {r['empty_tiles']:>6} {r['bytes'] / 1e6:>8.2f} "
              f"{r['tiles'] / r['seconds']:>8.1f}")  # fmt: skip
    print("max-zoom tiles vs the raster warped to each tile (mean |diff|, 0-255, over pixels both draw):")
    for k, v in quality.items():
        print(f"  {k}: {v}")
    write_json(args.json, {"raster": raster, "zoom": args.zoom, "machine": facts, "results": rows, "quality": quality})


if __name__ == "__main__":
    main()
