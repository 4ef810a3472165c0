"""Render one aerial GeoTIFF with the Python API and print where the time went.

python workflows/render_city.py city.tif out/ [--model sat2map] [--scheduler tcp://host:8786]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geopix.config import InferConfig, RenderConfig, TileConfig
from geopix.pipeline import render


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("input", type=Path)
    ap.add_argument("output_dir", type=Path)
    ap.add_argument("--model", default="sat2map")
    ap.add_argument("--scheduler", default=None, help="Dask scheduler address; default: a local cluster")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=1024)
    args = ap.parse_args()

    result = render(
        RenderConfig(
            input=args.input,
            output_dir=args.output_dir,
            model=args.model,
            tiles=TileConfig(tile_size=256, chunk_size=args.chunk_size),
            infer=InferConfig(device="auto", batch_size=8),
            scheduler=args.scheduler,
            workers=args.workers,
            overwrite=True,
            xyz=Path("tiles.pmtiles"),
        )
    )
    print(
        f"{result.map_path}: {result.width}×{result.height} px in {result.seconds:.1f} s "
        f"({result.tiles_per_second:.2f} tiles/s)"
    )
    for stage, seconds in result.stage_seconds.items():
        print(f"  {stage:>9}: {seconds:8.2f} worker-s")
    print(f"web tiles: {result.tiles_path}")


if __name__ == "__main__":
    main()
