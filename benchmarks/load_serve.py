"""A bounded load test for ``geopix serve``: requests/s, latency percentiles, errors.

    python benchmarks/load_serve.py [TILESET] [--threads 8] [--requests 4000] [--time-limit 30]

Starts ``geopix serve TILESET --port 0`` in a subprocess (a synthetic PMTiles pyramid
when TILESET is omitted) or targets ``--url`` (127.0.0.1/localhost only), then sends a
fixed number of tile requests from a pool of threads over keep-alive connections, stopping
early at the time limit.  200 and 204 (empty tile) count as successes.  Nothing asserts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit


def tile_paths(base: str) -> list[str]:
    """Every tile address of the tileset's bounds and zooms (present and empty) from its TileJSON."""
    import mercantile

    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", "/tilejson.json")
    tj = json.loads(conn.getresponse().read())
    ext = tj["tiles"][0].rsplit(".", 1)[1]
    paths = [
        f"/tiles/{t.z}/{t.x}/{t.y}.{ext}"
        for t in mercantile.tiles(*tj["bounds"], list(range(tj["minzoom"], tj["maxzoom"] + 1)))
    ]
    return paths


def load(base: str, paths: list[str], threads: int, requests: int, time_limit: float) -> dict:
    u = urlsplit(base)
    lock = threading.Lock()
    counter = [0]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = [0]
    deadline = time.perf_counter() + time_limit

    def worker() -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        mine: list[float] = []
        while time.perf_counter() < deadline:
            with lock:
                i = counter[0]
                if i >= requests:
                    break
                counter[0] += 1
            path = paths[i % len(paths)]
            t0 = time.perf_counter()
            try:
                conn.request("GET", path)
                r = conn.getresponse()
                r.read()
                status = str(r.status)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
                status = "exception"
            mine.append(time.perf_counter() - t0)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status not in ("200", "204"):
                    errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000 if lat else float("nan")

    return {
        "requests": len(lat),
        "seconds": wall,
        "rps": len(lat) / wall if wall else 0.0,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": lat[-1] * 1000 if lat else float("nan"),
        "errors": errors[0],
        "statuses": statuses,
        "threads": threads,
        "distinct_paths": len(paths),
    }


def synthetic_tileset(tmp: Path, size: int) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_tiles import synthetic_map

    from geopix.pyramid import PyramidConfig, build_pyramid

    src = synthetic_map(tmp / "map.tif", size)
    return build_pyramid(src, tmp / "tiles.pmtiles", PyramidConfig(), scheduler="sync").path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tileset", nargs="?", type=Path, help="tile folder, .pmtiles, .mbtiles or GeoTIFF")
    ap.add_argument("--url", help="an already running server (127.0.0.1 or localhost only)")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--time-limit", type=float, default=30.0, help="seconds; stops early")
    ap.add_argument("--size", type=int, default=2048, help="synthetic raster side when no tileset is given")
    ap.add_argument("--json", type=Path, default=Path("load_serve.json"))
    args = ap.parse_args()

    proc = None
    with tempfile.TemporaryDirectory(prefix="geopix-load-") as tmp:
        if args.url:
            host = urlsplit(args.url).hostname
            if host not in ("127.0.0.1", "localhost", "::1"):
                sys.exit(f"--url {args.url}: this load client only targets this machine (127.0.0.1)")
            base, label = args.url, args.url
        else:
            tileset = args.tileset or synthetic_tileset(Path(tmp), args.size)
            label = str(args.tileset or f"synthetic {args.size}² PMTiles")
            proc = subprocess.Popen(
                [sys.executable, "-m", "geopix", "serve", str(tileset), "--port", "0"],
                stdout=subprocess.PIPE,
                text=True,
            )
            line = proc.stdout.readline()
            base = line.split(" at ", 1)[1].split()[0]
        try:
            paths = tile_paths(base)
            res = load(base, paths, args.threads, args.requests, args.time_limit)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
    res.update(tileset=label, cpus=os.cpu_count(), platform=platform.platform())
    print(
        f"tileset: {label}; {res['distinct_paths']} distinct tile URLs; {args.threads} threads; {os.cpu_count()} CPUs"
    )
    print(f"{res['requests']} requests in {res['seconds']:.1f} s: {res['rps']:.0f} req/s, "
          f"p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, max {res['max_ms']:.1f} ms, "
          f"errors {res['errors']} (statuses {res['statuses']})")  # fmt: skip
    args.json.write_text(json.dumps(res, indent=2))
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
