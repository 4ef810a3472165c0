"""Remote vs local input: bytes fetched from an HTTP (Range) server per output Mpx, and wall time.

Serves a synthetic COG (default 8192²) from ``geopix.testservers.RangeHTTPServer`` on
127.0.0.1, then measures

* what the client alone fetches (``inspect_raster`` + the colour statistics: headers and one
  overview), as a share of the file's bytes (the target is < 1 %);
* a whole render from ``http://…`` vs from the local file: bytes served, bytes per output
  Mpx, wall time, and whether the two maps are byte-identical.

    python benchmarks/bench_remote.py [--size 8192] [--chunk-size 1024] [--model tiny|sat2map|PATH] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def make_cog(path: Path, size: int) -> Path:
    from rasterio.shutil import copy as rio_copy

    from geopix.testing import synthetic_aerial

    tiled = synthetic_aerial(path.with_suffix(".tiled.tif"), size, res=2.0)
    rio_copy(tiled, path, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512, OVERVIEW_RESAMPLING="AVERAGE")
    tiled.unlink()
    return path


def _phase(args: list[str]) -> dict:
    """Run one measured step in a fresh process: GDAL's download cache starts empty."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def client_phase(src: str, model: str) -> None:
    """What the client reads of the source: its header and the colour statistics' overview."""
    from geopix.models.registry import load_model
    from geopix.process import configure_process
    from geopix.read import colour_match, inspect_raster

    configure_process()
    stats = load_model(model).spec.input_stats
    info = inspect_raster(src)
    if stats:
        colour_match(info, stats)
    print(json.dumps({}))


def render_phase(src: str, out: str, model: str, workers: int | None, chunk: int) -> None:
    from geopix.config import RenderConfig, TileConfig
    from geopix.pipeline import render

    t0 = time.perf_counter()
    render(RenderConfig(input=src, output_dir=out, model=model, workers=workers, tiles=TileConfig(256, 64, chunk)))
    print(json.dumps({"seconds": time.perf_counter() - t0}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("phase", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument(
        "--model", default="tiny", help="sat2map, a checkpoint, or tiny (random ngf 4: the I/O, not the generator)"
    )
    ap.add_argument("--workers", type=int, default=None, help="local worker processes (default: in-process)")
    ap.add_argument("--chunk-size", type=int, default=1024, help="output block side (halo re-reads shrink as it grows)")
    args = ap.parse_args()
    if args.phase and args.phase[0] == "client":
        return client_phase(args.phase[1], args.model)
    if args.phase and args.phase[0] == "render":
        return render_phase(args.phase[1], args.phase[2], args.model, args.workers, args.chunk_size)

    from geopix.testing import random_checkpoint
    from geopix.testservers import RangeHTTPServer

    with tempfile.TemporaryDirectory(prefix="geopix-bench-remote-") as tmp:
        root = Path(tmp)
        (root / "www").mkdir()
        if args.model == "tiny":  # sat2map's colour statistics, so the client reads what a real render reads
            from geopix.models.registry import load_model

            stats = load_model("sat2map").spec.input_stats
            model = str(random_checkpoint(root / "tiny.safetensors", ngf=4, input_stats=stats))
        else:
            model = args.model
        t0 = time.perf_counter()
        cog = make_cog(root / "www" / "aerial.tif", args.size)
        file_bytes = cog.stat().st_size
        print(f"made {args.size}² COG ({file_bytes / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s", flush=True)
        out_mpx = args.size * args.size / 1e6
        extra = ["--model", model, "--chunk-size", str(args.chunk_size)]
        extra += ["--workers", str(args.workers)] if args.workers else []
        results: dict[str, object] = {
            "size": args.size,
            "chunk_size": args.chunk_size,
            "file_bytes": file_bytes,
            "model": args.model,
        }
        with RangeHTTPServer(root / "www") as server:
            url = f"{server.url}/aerial.tif"
            server.reset_counts()
            _phase(["client", url, *extra])
            results["client_bytes"] = server.bytes_sent
            results["client_requests"] = server.requests
            results["client_share_of_file"] = round(server.bytes_sent / file_bytes, 5)
            print(f"client alone: {server.bytes_sent} B in {server.requests} requests", flush=True)
            for label, src in (("local", str(cog)), ("remote", url)):
                server.reset_counts()
                seconds = _phase(["render", src, str(root / label), *extra])["seconds"]
                results[f"{label}_seconds"] = round(seconds, 1)
                if label == "remote":
                    results["remote_bytes"] = server.bytes_sent
                    results["remote_requests"] = server.requests
                    results["remote_bytes_per_output_mpx"] = round(server.bytes_sent / out_mpx)
                    results["remote_bytes_over_file"] = round(server.bytes_sent / file_bytes, 3)
                print(f"{label}: {seconds:.1f} s", flush=True)
            local_map, remote_map = root / "local" / "map.tif", root / "remote" / "map.tif"
            results["identical"] = local_map.read_bytes() == remote_map.read_bytes()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
