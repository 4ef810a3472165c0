"""A bounded load test for ``geopix serve``: requests/s, latency percentiles, errors.

    python benchmarks/load_serve.py [TILESET ...] [--clients 200] [--requests 20000] [--no-keepalive]
    python benchmarks/load_serve.py --all-kinds --clients 200 --requests 20000   # folder, PMTiles, MBTiles x both modes

Starts ``geopix serve TILESET --port 0`` in a subprocess for each tileset (a synthetic
2048² pyramid in each format with ``--all-kinds``, or one PMTiles when none is given) or
targets ``--url`` (127.0.0.1/localhost only).  ``--clients`` threads send a fixed number of
tile requests, each over one keep-alive connection or (``--no-keepalive``) a new connection
per request, stopping early at ``--time-limit``.  A request times out after 30 s.  200 and
204 (empty tile) count as successes.  The client runs on the same machine as the server, so
the figures are the pair's, not the server's alone.  Nothing asserts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from harness import machine, synthetic_map, write_json

TIMEOUT_S = 30.0


def tile_paths(base: str) -> list[str]:
    """Every tile address of the tileset's bounds and zooms (present and empty) from its TileJSON."""
    import mercantile

    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", "/tilejson.json")
    tj = json.loads(conn.getresponse().read())
    ext = tj["tiles"][0].rsplit(".", 1)[1]
    return [
        f"/tiles/{t.z}/{t.x}/{t.y}.{ext}"
        for t in mercantile.tiles(*tj["bounds"], list(range(tj["minzoom"], tj["maxzoom"] + 1)))
    ]


def load(base: str, paths: list[str], clients: int, requests: int, time_limit: float, keepalive: bool) -> dict:
    u = urlsplit(base)
    lock = threading.Lock()
    counter = [0]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = [0]
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT_S)

    def worker() -> None:
        conn = connect()
        mine: list[float] = []
        headers = {} if keepalive else {"Connection": "close"}
        start.wait()
        while time.perf_counter() < deadline[0]:
            with lock:
                i = counter[0]
                if i >= requests:
                    break
                counter[0] += 1
            path = paths[i % len(paths)]
            t0 = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                r = conn.getresponse()
                r.read()
                status = str(r.status)
                if not keepalive or r.will_close:
                    conn.close()
                    conn = connect()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = connect()
                status = type(exc).__name__
            mine.append(time.perf_counter() - t0)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status not in ("200", "204"):
                    errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in pool:
        t.start()
    deadline[0] = time.perf_counter() + time_limit
    t0 = time.perf_counter()
    start.wait()
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
        "clients": clients,
        "keepalive": keepalive,
        "distinct_paths": len(paths),
    }


def synthetic_tilesets(tmp: Path, size: int, kinds: list[str]) -> list[Path]:
    from geopix.pyramid import PyramidConfig, build_pyramid

    src = synthetic_map(tmp / "map.tif", size)
    names = {"dir": "tiles", "pmtiles": "tiles.pmtiles", "mbtiles": "tiles.mbtiles"}
    return [build_pyramid(src, tmp / names[k], PyramidConfig(), scheduler="sync").path for k in kinds]


def serve_and_load(tileset: Path | None, url: str | None, args: argparse.Namespace, keepalive: bool) -> dict:
    proc = None
    if url:
        base = url
    else:
        cmd = [sys.executable, "-m", "geopix", "serve", str(tileset), "--port", "0"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = proc.stdout.readline()
        base = line.split(" at ", 1)[1].split()[0]
    try:
        paths = tile_paths(base)
        res = load(base, paths, args.clients, args.requests, args.time_limit, keepalive)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    res["tileset"] = url or str(tileset)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tilesets", nargs="*", type=Path, help="tile folders, .pmtiles, .mbtiles or GeoTIFFs")
    ap.add_argument("--url", help="an already running server (127.0.0.1 or localhost only)")
    ap.add_argument("--all-kinds", action="store_true", help="synthetic folder, PMTiles and MBTiles")
    ap.add_argument("--clients", "--threads", type=int, default=200, help="concurrent client threads")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--no-keepalive", action="store_true", help="only a new connection per request")
    ap.add_argument("--keepalive-only", action="store_true", help="only keep-alive connections")
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds per run; stops early")
    ap.add_argument("--size", type=int, default=2048, help="synthetic raster side")
    ap.add_argument("--label", default="", help="a name for this server build in the output")
    ap.add_argument("--json", type=Path, default=Path("load_serve.json"))
    args = ap.parse_args()
    if args.url and urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"--url {args.url}: this load client only targets this machine (127.0.0.1)")
    modes = [m for m in (True, False) if not (m and args.no_keepalive) and not (not m and args.keepalive_only)]

    results, facts = [], machine()
    with tempfile.TemporaryDirectory(prefix="geopix-load-") as tmp:
        if args.url:
            targets: list[Path | None] = [None]
        elif args.tilesets and not args.all_kinds:
            targets = list(args.tilesets)
        else:
            targets = list(synthetic_tilesets(Path(tmp), args.size, ["dir", "pmtiles", "mbtiles"]))
            if not args.all_kinds:
                targets = targets[1:2]
        for target in targets:
            for keepalive in modes:
                res = serve_and_load(target, args.url, args, keepalive)
                res.update(label=args.label, machine=facts)
                results.append(res)
                name = Path(res["tileset"]).name
                print(f"{args.label} {name:14s} keep-alive={'yes' if keepalive else 'no ':3s} "
                      f"{res['requests']} req in {res['seconds']:.1f} s: {res['rps']:.0f} req/s, "
                      f"p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, max {res['max_ms']:.0f} ms, "
                      f"errors {res['errors']} {res['statuses']}", flush=True)  # fmt: skip
    print(f"{args.clients} clients; {os.cpu_count()} CPUs; distinct tile URLs {results[0]['distinct_paths']}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
