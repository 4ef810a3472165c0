"""Which reader for .osm.pbf: GDAL's OSM driver (through pyogrio) or pyosmium?

Writes a synthetic extract (a grid of closed building ways and road ways, the tags an OSM
city extract has) with pyosmium, then reads the buildings and roads into shapely geometries
with each reader, as ``geopix dataset vectors`` needs them, and prints the times.

    python benchmarks/bench_osm_read.py [--buildings 40000] [--roads 4000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import shapely


def write_extract(path: Path, n_buildings: int, n_roads: int, compression: str = "zlib") -> None:
    import osmium
    from osmium.osm.mutable import Node, Way

    side = int(np.ceil(np.sqrt(n_buildings)))
    d = 2e-4  # ~20 m
    # Without metadata: GDAL's parser rejects the empty version/timestamp blocks of objects made here.
    w = osmium.SimpleWriter(osmium.io.File(str(path), f"pbf,add_metadata=false,pbf_compression={compression}"))
    nid = 1
    ways = []
    for i in range(n_buildings):
        x, y = 15.0 + (i % side) * d, 47.0 + (i // side) * d
        ids = list(range(nid, nid + 4))
        for k, (dx, dy) in enumerate(((0, 0), (1e-4, 0), (1e-4, 1e-4), (0, 1e-4))):
            w.add_node(Node(id=ids[k], location=(x + dx, y + dy), tags={}))
        nid += 4
        ways.append(([*ids, ids[0]], {"building": "yes"}))
    for j in range(n_roads):
        y = 47.0 + (j % side) * d + 1.5e-4
        ids = [nid, nid + 1]
        w.add_node(Node(id=ids[0], location=(15.0, y), tags={}))
        w.add_node(Node(id=ids[1], location=(15.0 + side * d, y), tags={}))
        nid += 2
        ways.append((ids, {"highway": "residential"}))
    for k, (nodes, tags) in enumerate(ways, start=1):
        w.add_way(Way(id=k, nodes=nodes, tags=tags))
    w.close()


def read_gdal(path: Path) -> tuple[int, int]:
    from pyogrio.raw import read

    from geopix.data.vectors import _tags, class_from_tags

    counts = [0, 0]
    for layer in ("lines", "multipolygons"):
        meta, _, wkb, data = read(path, layer=layer)
        geoms = shapely.from_wkb(wkb)
        names = list(meta["fields"])
        for i in range(len(geoms)):
            cls, _, _ = class_from_tags(_tags({n: data[j][i] for j, n in enumerate(names)}))
            if cls == "building":
                counts[0] += 1
            elif cls is not None:
                counts[1] += 1
    return counts[0], counts[1]


def read_pyosmium(path: Path) -> tuple[int, int]:
    from geopix.data.vectors import class_from_tags, read_osm

    _, rows = read_osm(path, (-180, -90, 180, 90))
    classes = [class_from_tags(r)[0] for r in rows]
    return classes.count("building"), sum(c is not None and c != "building" for c in classes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--buildings", type=int, default=40000)
    ap.add_argument("--roads", type=int, default=4000)
    args = ap.parse_args()
    for compression in ("zlib", "none"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "extract.osm.pbf"
            write_extract(path, args.buildings, args.roads, compression)
            size = path.stat().st_size / 2**20
            print(f"extract ({compression}): {args.buildings} buildings, {args.roads} roads, {size:.1f} MiB")
            for name, fn in (("GDAL OSM driver (pyogrio)", read_gdal), ("pyosmium (geopix)", read_pyosmium)):
                t0 = time.perf_counter()
                try:
                    n = fn(path)
                except Exception as exc:  # the measurement is whether it reads at all
                    print(f"  {name:28s} failed: {exc}")
                    continue
                print(f"  {name:28s} {time.perf_counter() - t0:6.2f} s  buildings {n[0]}  roads {n[1]}")


if __name__ == "__main__":
    main()
