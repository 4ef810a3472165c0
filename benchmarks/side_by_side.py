"""Render a GeoTIFF and save a downsampled side-by-side PNG (input | map) for the docs.

python benchmarks/side_by_side.py ../shared/data/geotiffs/vienna_30cm_epsg31256.tif docs/img/vienna.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling


def read_rgb(path: Path, width: int) -> np.ndarray:
    with rasterio.open(path) as ds:
        h = round(ds.height * width / ds.width)
        data = ds.read([1, 2, 3], out_shape=(3, h, width), resampling=Resampling.average)
        mask = ds.dataset_mask(out_shape=(h, width), resampling=Resampling.nearest)
    rgb = data.transpose(1, 2, 0).copy()
    rgb[mask == 0] = 255
    return rgb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("input", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--model", default="sat2map")
    ap.add_argument("--width", type=int, default=700, help="width of each half in the PNG")
    args = ap.parse_args()

    from geopix.config import RenderConfig
    from geopix.pipeline import render

    with tempfile.TemporaryDirectory() as tmp:
        result = render(RenderConfig(input=args.input, output_dir=Path(tmp), model=args.model))
        left = read_rgb(args.input, args.width)
        right = read_rgb(result.map_path, args.width)
    gap = np.full((left.shape[0], 8, 3), 255, np.uint8)
    args.png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([left, gap, right], axis=1)).save(args.png, optimize=True)
    print(f"{args.png}: {result.width}×{result.height} px rendered in {result.seconds:.1f} s")


if __name__ == "__main__":
    main()
