"""Rasterizing a raster's vector labels vs rendering it: the labels must be the cheap part.

Writes a synthetic SIZE² aerial (0.3 m/px, UTM) and a GeoPackage of building footprints and
road centre lines covering it (EPSG:4326, so the reprojection is timed too), then times

* ``geopix dataset vectors``' work: read + classify + reproject + buffer roads + rasterize
  at the model's ground resolution, aligned to the aerial (and, separately, writing the pairs);
* ``geopix render`` of the same raster with the shipped model (``--no-cog``).

    python benchmarks/bench_rasterize.py [--size 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import shapely


def write_vectors(path: Path, x0: float, y0: float, extent_m: float) -> tuple[int, int]:
    """A city block pattern: a road every 100 m both ways, 4 × 4 houses per block."""
    import pyogrio
    from pyproj import Transformer

    tr = Transformer.from_crs(32633, 4326, always_xy=True)

    def to4326(g):
        return shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))

    geoms, kinds = [], []
    n = int(extent_m // 100)
    for i in range(n + 1):
        geoms.append(to4326(shapely.LineString([(x0, y0 - 100 * i), (x0 + extent_m, y0 - 100 * i)])))
        geoms.append(to4326(shapely.LineString([(x0 + 100 * i, y0), (x0 + 100 * i, y0 - extent_m)])))
        kinds += ["residential", "residential"]
    roads = len(geoms)
    for bx in range(n):
        for by in range(n):
            for hx in range(4):
                for hy in range(4):
                    x, y = x0 + 100 * bx + 12 + 20 * hx, y0 - 100 * by - 12 - 20 * hy
                    geoms.append(to4326(shapely.box(x, y - 12, x + 12, y)))
                    kinds.append(None)
    wkb = np.array(shapely.to_wkb(np.array(geoms, dtype=object)), dtype=object)
    highway = np.array(kinds, dtype=object)
    building = np.array([None if k else "yes" for k in kinds], dtype=object)
    pyogrio.raw.write(
        path, wkb, [highway, building], ["highway", "building"], geometry_type="Unknown", crs="EPSG:4326", driver="GPKG"
    )
    return len(geoms) - roads, roads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10000)
    ap.add_argument("--keep", type=Path, default=None, help="Keep the inputs and outputs here.")
    args = ap.parse_args()
    from geopix.config import RenderConfig
    from geopix.data.rasterize import rasterize_labels
    from geopix.data.vector_pairs import features_for, make_vector_pairs
    from geopix.data.vectors import LayerSpec
    from geopix.models.registry import load_model
    from geopix.pipeline import render
    from geopix.testing import synthetic_aerial

    tmp = Path(args.keep or tempfile.mkdtemp())
    tmp.mkdir(parents=True, exist_ok=True)
    x0, y0, res = 500000.0, 5300000.0, 0.3
    t0 = time.perf_counter()
    aerial = synthetic_aerial(tmp / "aerial.tif", args.size, res=res, origin=(x0, y0))
    vectors = tmp / "labels.gpkg"
    n_b, n_r = write_vectors(vectors, x0, y0, args.size * res)
    print(f"inputs: {args.size}² px at {res} m ({time.perf_counter() - t0:.1f} s), {n_b} buildings, {n_r} roads")

    model_res = load_model("sat2map").spec.ground_resolution_m
    layer = LayerSpec.parse(str(vectors))
    t0 = time.perf_counter()
    info, grid, features, _ = features_for(aerial, [layer], model_res)
    labels = rasterize_labels(features, grid.transform(info), (grid.height, grid.width))
    t_labels = time.perf_counter() - t0
    print(f"rasterize labels: {t_labels:.1f} s ({grid.width}×{grid.height} px at {model_res:.2f} m)")
    assert labels.top.any()
    t0 = time.perf_counter()
    result = make_vector_pairs(rasters=[aerial], layers=[layer], out_dir=tmp / "pairs", overwrite=True)
    t_pairs = time.perf_counter() - t0
    print(f"dataset vectors (labels + aerial + {result.pairs} pairs written): {t_pairs:.1f} s")
    t0 = time.perf_counter()
    render(RenderConfig(input=aerial, output_dir=tmp / "render", overwrite=True, cog=False))
    t_render = time.perf_counter() - t0
    print(f"render: {t_render:.1f} s")
    print(f"rasterize / render: {t_labels / t_render:.3f}; dataset vectors / render: {t_pairs / t_render:.3f}")


if __name__ == "__main__":
    main()
