"""Render benchmarks: seam score, peak memory vs raster size, raw generator vs end-to-end throughput.

Prints figures and writes JSON; nothing here asserts (targets are read by people, not CI).

    python benchmarks/bench_render.py seams   [--model M]          # naive stitching vs ours, real GeoTIFF
    python benchmarks/bench_render.py memory  [--sizes 4096,16384]  # peak RSS of the whole process tree
    python benchmarks/bench_render.py throughput [--model M] [--size 3072]

Rasters are built inside the benchmark from ../shared GeoTIFFs (mosaicked / tiled), never committed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from harness import VIENNA, PeakRSS, default_model, machine, mosaic, per_call, random_model, write_json


def render_once(src: Path, out: Path, model: str, **kw) -> tuple[object, float]:
    from geopix.config import InferConfig, RenderConfig, TileConfig
    from geopix.pipeline import render

    tiles = TileConfig(kw.pop("tile_size", 256), kw.pop("overlap", 64), kw.pop("chunk_size", 1024))
    infer = InferConfig(batch_size=kw.pop("batch_size", 8))
    cfg = RenderConfig(input=src, output_dir=out, model=model, tiles=tiles, infer=infer, overwrite=True, **kw)
    with PeakRSS() as rss:
        result = render(cfg)
    top = sorted(rss.per_process.items(), key=lambda kv: -kv[1])[:4]
    print("  peak RSS by process:", ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in top), flush=True)
    return result, rss.peak / 2**30


# ---- seams -----------------------------------------------------------------------------------
def seam_score(img: np.ndarray, valid: np.ndarray, rows: list[int], cols: list[int]) -> float:
    """Mean |gradient| across the given tile borders ÷ mean |gradient| everywhere else."""
    on_sum, on_n, off_sum, off_n = seam_sums(img, valid, rows, cols)
    return (on_sum / on_n) / (off_sum / off_n)


def window_edges(grid) -> tuple[list[int], list[int]]:
    """Row and column lines where a tile's influence starts or ends (its window edges)."""
    rows = sorted({e for i in range(grid.rows) for e in (grid.window(i, 0).row, grid.window(i, 0).row_stop)})
    cols = sorted({e for j in range(grid.cols) for e in (grid.window(0, j).col, grid.window(0, j).col_stop)})
    return rows, cols


def seam_sums(img: np.ndarray, valid: np.ndarray, rows: list[int], cols: list[int]) -> tuple[float, int, float, int]:
    """(sum, count) of |gradient| across the given lines, then elsewhere: ``seam_score`` pooled over rasters."""
    x = img.astype(np.float32)
    gx = np.abs(np.diff(x, axis=2)).sum(0)  # between col c-1 and c at index c-1
    gy = np.abs(np.diff(x, axis=1)).sum(0)
    vx = valid[:, 1:] & valid[:, :-1]
    vy = valid[1:, :] & valid[:-1, :]
    border_x = np.zeros_like(vx)
    border_y = np.zeros_like(vy)
    for c in cols:
        if 0 < c < x.shape[2]:
            border_x[:, c - 1] = True
    for r in rows:
        if 0 < r < x.shape[1]:
            border_y[r - 1, :] = True
    on = np.concatenate([gx[border_x & vx], gy[border_y & vy]])
    off = np.concatenate([gx[~border_x & vx], gy[~border_y & vy]])
    return float(on.sum(dtype=np.float64)), on.size, float(off.sum(dtype=np.float64)), off.size


def bench_seams(args: argparse.Namespace) -> dict:
    import rasterio

    from geopix.models.registry import load_model
    from geopix.plan import TileGrid

    model = args.model or default_model()
    src = Path(args.input)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        overlaps = [int(o) for o in str(args.overlaps or args.overlap).split(",")]
        runs = [("naive (overlap 0, no blending)", 0)] + [(f"geopix (overlap {o})", o) for o in overlaps if o]
        for name, overlap in runs:
            out = Path(tmp) / f"o{overlap}"
            render_once(
                src, out, model, overlap=overlap, output_resolution="model", chunk_size=4096, resample=args.resample
            )
            with rasterio.open(out / "map.tif") as ds:
                img, valid = ds.read(), ds.dataset_mask() > 0
            rows, cols = window_edges(TileGrid(img.shape[1], img.shape[2], 256, overlap))
            results[name] = round(seam_score(img, valid, rows, cols), 3)
    spec = load_model(model).spec
    return {
        "benchmark": "seams",
        "input": src.name,
        "model": Path(model).name,
        "model_ngf": spec.ngf,
        "resampled_to_model_resolution": args.resample,
        "seam_score": results,
    }


# ---- memory ----------------------------------------------------------------------------------
def bench_memory(args: argparse.Namespace) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # A model "trained" at --model-res m/px: the 0.3 m mosaic is resampled to it (the default
        # render path), so the output is full size while inference stays affordable on 2 cores.
        model = args.model or random_model(tmp, 4, args.model_res)
        for size in [int(s) for s in args.sizes.split(",")]:
            src = mosaic(Path(args.input), tmp / f"mosaic_{size}.tif", size)
            # A fresh `geopix render` process, as a user runs it: this benchmark's own GDAL
            # cache (from writing the mosaic) must not count.
            out = tmp / f"out_{size}"
            cmd = [sys.executable, "-m", "geopix", "render", str(src), "-o", str(out), "--model", model,
                   "--chunk-size", str(args.chunk), "--no-progress"]  # fmt: skip
            with PeakRSS(cmd) as rss:
                pass
            top = sorted(rss.per_process.items(), key=lambda kv: -kv[1])[:3]
            manifest = json.loads((out / "render.json").read_text())
            rows.append(
                {
                    "size": size,
                    "work_grid": manifest["work_grid"],
                    "peak_rss_gib": round(rss.peak / 2**30, 3),
                    "budget_estimate_gib": round(_estimate(src, tmp / "est", model, args.chunk) / 2**30, 3),
                    "seconds": manifest["seconds"],
                    "tiles": manifest["tiles"],
                    "tiles_run": manifest["tiles_run"],
                    "peak_by_process_gib": {k: round(v / 2**30, 3) for k, v in top},
                }
            )
            print(rows[-1], flush=True)
            (tmp / f"mosaic_{size}.tif").unlink()
    base = rows[0]["peak_rss_gib"]
    return {
        "benchmark": "memory",
        "model": Path(model).name,
        "model_res_m": args.model_res,
        "chunk": args.chunk,
        "runs": rows,
        "largest_vs_smallest": round(rows[-1]["peak_rss_gib"] / base, 3),
    }


def _estimate(src: Path, out: Path, model: str, chunk: int) -> int:
    """What the memory budget check (``geopix.budget``) expects this render to need at most."""
    from geopix.config import RenderConfig, TileConfig
    from geopix.pipeline import prepare

    cfg = RenderConfig(input=src, output_dir=out, model=model, tiles=TileConfig(256, 64, chunk))
    return prepare(cfg).memory.total_bytes


# ---- throughput ------------------------------------------------------------------------------
def raw_generator(model: str, batch: int, threads: int, seconds: float = 20.0) -> float:
    import torch

    from geopix.infer import Predictor
    from geopix.models.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    pred = Predictor.from_loaded(load_checkpoint(model), "cpu")
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, 256, 256)).astype(np.float32)
    return batch / per_call(lambda: pred.predict(x), seconds)[0]


def bench_throughput(args: argparse.Namespace) -> dict:
    model = args.model or default_model()
    threads = os.cpu_count() or 1
    raw = raw_generator(model, args.batch, threads)
    print(f"raw generator: {raw:.2f} tiles/s (batch {args.batch}, {threads} threads)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = mosaic(Path(args.input), tmp / "mosaic.tif", args.size)
        result, peak = render_once(
            src,
            tmp / "out",
            model,
            resample=False,
            chunk_size=args.chunk,
            batch_size=args.batch,
            workers=args.workers or None,
        )
    e2e_planned = result.tiles / result.seconds
    e2e_run = result.tiles_run / result.seconds
    return {
        "benchmark": "throughput",
        "model": Path(model).name,
        "raster": args.size,
        "chunk": args.chunk,
        "batch": args.batch,
        "raw_tiles_per_s": round(raw, 2),
        "e2e_planned_tiles_per_s": round(e2e_planned, 2),
        "e2e_executed_tiles_per_s": round(e2e_run, 2),
        "e2e_vs_raw_planned": round(e2e_planned / raw, 3),
        "e2e_vs_raw_executed": round(e2e_run / raw, 3),
        "tiles_planned": result.tiles,
        "tiles_executed": result.tiles_run,
        "seconds": round(result.seconds, 1),
        "stage_worker_seconds": result.stage_seconds,
        "peak_rss_gib": round(peak, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["seams", "memory", "throughput"])
    ap.add_argument("--model", default="")
    ap.add_argument("--input", default=str(VIENNA), help="the aerial GeoTIFF the rasters are built from")
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--overlaps", default="", help="seams: a comma-separated sweep, e.g. 16,32,64,96")
    ap.add_argument("--sizes", default="4096,16384")
    ap.add_argument("--size", type=int, default=3072)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument(
        "--model-res",
        type=float,
        default=1.2,
        help="memory: the random model's ground resolution (0.03: a 'coarse' input, upsampled 10×)",
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=0, help="throughput: local workers (0: the default)")
    ap.add_argument("--json", default="")
    ap.add_argument("--resample", action="store_true", help="seams: run at the model's resolution (few tiles)")
    args = ap.parse_args()
    if not Path(args.input).exists():
        raise SystemExit(f"{args.input} is absent: pass --input AERIAL.tif (the rasters are built from it)")
    out = {"seams": bench_seams, "memory": bench_memory, "throughput": bench_throughput}[args.which](args)
    out["machine"] = machine()
    print(json.dumps(out, indent=2))
    write_json(args.json, out)


if __name__ == "__main__":
    main()
