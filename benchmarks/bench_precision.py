"""Colour fidelity of reduced precision: bf16 / fp16 generator output against fp32, on real imagery.

Every 256×256 tile of the four shared GeoTIFFs (read at the model's ground resolution, as
render does) goes through the generator in fp32 and in the reduced precision; the map
colours are compared in 0..255 units.  Also times both on this device.

    python benchmarks/bench_precision.py [--model M] [--device cpu|cuda] [--precisions bf16,fp16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from harness import ROOT, SHARED, machine, write_json


def real_tiles(model_res: float, spec, tile: int = 256, folder: Path = SHARED) -> np.ndarray:
    """All full tiles of the shared GeoTIFFs, at the model's resolution and as stored (the
    rasters are small: at 1.9 m/px each holds few tiles), as model input in [-1, 1]."""
    from geopix.plan import Window
    from geopix.read import WorkReader, colour_match, inspect_raster, work_grid

    out = []
    for path in sorted(Path(folder).glob("*.tif")):
        info = colour_match(inspect_raster(path), spec.input_stats)
        for resample in (True, False):
            grid = work_grid(info, model_res, resample)
            with WorkReader(info, grid) as reader:
                data, valid = reader.read(Window(0, 0, grid.height, grid.width))
            for r in range(0, grid.height - tile + 1, tile // 2):
                for c in range(0, grid.width - tile + 1, tile // 2):
                    if valid[r : r + tile, c : c + tile].mean() > 0.9:
                        out.append(data[:, r : r + tile, c : c + tile])
    return np.stack(out).astype(np.float32)


def run(pred, tiles: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    outs = []
    pred.predict(tiles[:batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(tiles), batch):
        x = np.zeros((batch, *tiles.shape[1:]), np.float32)
        part = tiles[i : i + batch]
        x[: len(part)] = part
        outs.append(pred.predict(x)[: len(part)])
    return np.concatenate(outs), len(tiles) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "geopix" / "weights" / "sat2map.safetensors"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precisions", default="bf16")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", default="")
    ap.add_argument("--geotiffs", type=Path, default=SHARED, help="folder of aerial GeoTIFFs (*.tif) to tile")
    args = ap.parse_args()

    from geopix.infer import Predictor, resolve_device
    from geopix.models.checkpoint import load_checkpoint

    if not args.geotiffs.is_dir():
        raise SystemExit(f"{args.geotiffs} is absent: pass --geotiffs DIR (a folder of aerial GeoTIFFs)")
    loaded = load_checkpoint(args.model)
    tiles = real_tiles(loaded.spec.ground_resolution_m, loaded.spec, folder=args.geotiffs)
    device = resolve_device(args.device)
    ref, ref_speed = run(Predictor(loaded.spec, loaded.net, device, True, "fp32"), tiles, args.batch)
    ref8 = np.clip(np.rint(ref), 0, 255)
    report = {"model": Path(args.model).name, "device": str(device), "tiles": len(tiles), "fp32_tiles_per_s": ref_speed}
    print(f"{len(tiles)} real 256² tiles from {args.geotiffs}; fp32: {ref_speed:.1f} tiles/s on {device}")
    for name in args.precisions.split(","):
        out, speed = run(Predictor(loaded.spec, loaded.net, device, True, name), tiles, args.batch)
        diff = np.abs(np.clip(np.rint(out), 0, 255) - ref8)
        per_px = diff.max(axis=1)  # worst channel per pixel
        row = {
            "tiles_per_s": round(speed, 1),
            "speedup": round(speed / ref_speed, 2),
            "mean_abs_diff": round(float(diff.mean()), 3),
            "max_abs_diff": int(diff.max()),
            "p99_abs_diff": float(np.percentile(per_px, 99)),
            "pixels_diff_gt_5_pct": round(float((per_px > 5).mean() * 100), 3),
        }
        report[name] = row
        print(
            f"{name}: {speed:.1f} tiles/s ({row['speedup']}x); |{name} - fp32| mean {row['mean_abs_diff']}, "
            f"max {row['max_abs_diff']}, p99 {row['p99_abs_diff']}, pixels off by >5: {row['pixels_diff_gt_5_pct']} %"
        )
    write_json(args.json, report | {"machine": machine()})


if __name__ == "__main__":
    main()
