"""Remote vs local input: wall time, bytes fetched per output Mpx, and what the client alone reads.

Builds an 8192² COG (default: ``../shared/data/geotiffs/vienna_30cm_epsg31256.tif`` mirrored, as
the other benchmarks do; ``--source synthetic`` without the shared data), serves it from
``geopix.testservers.RangeHTTPServer`` and from ``S3Server`` (moto) on 127.0.0.1, then measures

* what the client alone fetches, from each server, as a share of the file's bytes (the target is
  < 1 %): on a cluster the header only (``inspect_raster``; a worker reads the colour statistics'
  overview), with the default in-process worker the header and that overview;
* a whole render from the local file, from ``http://…`` and from ``s3://…``: wall time, bytes the
  server sent (response bodies), bytes per output Mpx, and whether the maps are byte-identical.

Each step runs in a fresh process (GDAL's download cache starts empty); the load average is
sampled throughout, since the machine may be shared.

    python benchmarks/bench_remote.py [--size 8192] [--chunk-size 1024] [--model tiny|sat2map|PATH]
                                      [--source vienna|synthetic] [--no-resample] [--workers N]
                                      [--client-only]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from harness import VIENNA, machine, mosaic

BUCKET = "geopix-bench"


def make_cog(path: Path, size: int, source: str) -> Path:
    """A ``size``² RGB COG (deflate, 512² tiles, overviews), from Vienna mirrored or synthetic."""
    from rasterio.shutil import copy as rio_copy

    tiled = path.with_suffix(".tiled.tif")
    if source == "vienna":
        if not VIENNA.exists():
            raise SystemExit(f"{VIENNA} is absent; pass --source synthetic")
        mosaic(VIENNA, tiled, size)
    else:
        from geopix.testing import synthetic_aerial

        synthetic_aerial(tiled, size, res=2.0)
    rio_copy(tiled, path, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512, OVERVIEW_RESAMPLING="AVERAGE")
    tiled.unlink()
    return path


def _phase(args: list[str], env: dict[str, str] | None = None) -> dict:
    """Run one measured step in a fresh process: GDAL's download cache starts empty."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def client_phase(src: str, model: str, with_stats: bool) -> None:
    """What the client reads of the source: its header, and (``with_stats``: no cluster, the
    in-process worker is the client) the colour statistics' overview."""
    from geopix.models.registry import load_model
    from geopix.process import configure_process
    from geopix.read import colour_match, inspect_raster

    configure_process()
    stats = load_model(model).spec.input_stats
    info = inspect_raster(src)
    if stats and with_stats:
        colour_match(info, stats)
    print(json.dumps({}))


def render_phase(src: str, out: str, model: str, workers: int | None, chunk: int, resample: bool) -> None:
    from geopix.config import RenderConfig, TileConfig
    from geopix.pipeline import render
    from geopix.process import configure_process

    configure_process()  # as the CLI does
    t0 = time.perf_counter()
    result = render(
        RenderConfig(
            input=src,
            output_dir=out,
            model=model,
            workers=workers,
            resample=resample,
            tiles=TileConfig(256, 64, chunk),
        )
    )
    print(json.dumps({"seconds": time.perf_counter() - t0, "tiles": result.tiles}))


class LoadSampler:
    """The 1-minute load average every ``interval`` seconds, in a thread."""

    def __init__(self, interval: float = 5.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(interval)

    def __enter__(self) -> LoadSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    def summary(self) -> dict[str, float]:
        s = self.samples or [os.getloadavg()[0]]
        return {"min": round(min(s), 2), "mean": round(sum(s) / len(s), 2), "max": round(max(s), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("phase", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument(
        "--model", default="tiny", help="sat2map, a checkpoint, or tiny (random ngf 4: the I/O, not the generator)"
    )
    ap.add_argument("--source", choices=("vienna", "synthetic"), default="vienna")
    ap.add_argument("--no-resample", action="store_true", help="render on the source grid (more generator work)")
    ap.add_argument("--workers", type=int, default=None, help="local worker processes (default: in-process)")
    ap.add_argument("--chunk-size", type=int, default=1024, help="output block side (halo re-reads shrink as it grows)")
    ap.add_argument("--client-only", action="store_true", help="measure what the client reads, skip the renders")
    args = ap.parse_args()
    if args.phase and args.phase[0] in ("client", "client+stats"):
        return client_phase(args.phase[1], args.model, args.phase[0] == "client+stats")
    if args.phase and args.phase[0] == "render":
        return render_phase(
            args.phase[1], args.phase[2], args.model, args.workers, args.chunk_size, not args.no_resample
        )

    from geopix.testing import random_checkpoint
    from geopix.testservers import RangeHTTPServer, S3Server, environ_with, s3_env, upload_to_s3

    with tempfile.TemporaryDirectory(prefix="geopix-bench-remote-") as tmp, LoadSampler() as load:
        root = Path(tmp)
        (root / "www").mkdir()
        if args.model == "tiny":  # sat2map's colour statistics and resolution: it reads what a real render reads
            from geopix.models.registry import load_model

            spec = load_model("sat2map").spec
            model = str(
                random_checkpoint(
                    root / "tiny.safetensors",
                    ngf=4,
                    input_stats=spec.input_stats,
                    ground_resolution_m=spec.ground_resolution_m,
                )
            )
        else:
            model = args.model
        t0 = time.perf_counter()
        cog = make_cog(root / "www" / "aerial.tif", args.size, args.source)
        file_bytes = cog.stat().st_size
        print(f"made {args.size}² COG ({file_bytes / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s", flush=True)
        out_mpx = args.size * args.size / 1e6
        extra = ["--model", model, "--chunk-size", str(args.chunk_size)]
        extra += ["--workers", str(args.workers)] if args.workers else []
        extra += ["--no-resample"] if args.no_resample else []
        results: dict[str, object] = {
            "size": args.size,
            "source": args.source,
            "resample": not args.no_resample,
            "chunk_size": args.chunk_size,
            "file_bytes": file_bytes,
            "model": args.model,
        }
        with RangeHTTPServer(root / "www") as http, S3Server() as s3:
            s3_environ = environ_with(s3_env(s3.url))
            os.environ.update(s3_env(s3.url))  # this process uploads
            from geopix.remote import filesystem

            filesystem(f"s3://{BUCKET}")[0].mkdir(BUCKET)
            upload_to_s3(cog, f"s3://{BUCKET}/aerial.tif")
            inputs = {
                "local": (str(cog), None, None),
                "http": (f"{http.url}/aerial.tif", http, None),
                "s3": (f"s3://{BUCKET}/aerial.tif", s3, s3_environ),
            }
            for label in ("http", "s3"):
                src, server, env = inputs[label]
                for phase, key in (("client", "client_on_cluster"), ("client+stats", "client_in_process")):
                    server.reset_counts()
                    _phase([phase, src, *extra], env)
                    results[f"{label}_{key}_bytes"] = server.bytes_sent
                    results[f"{label}_{key}_requests"] = server.requests
                    results[f"{label}_{key}_share_of_file"] = round(server.bytes_sent / file_bytes, 5)
                    print(f"{label} {key}: {server.bytes_sent} B in {server.requests} requests", flush=True)
            for label, (src, server, env) in inputs.items():
                if args.client_only:
                    break
                if server is not None:
                    server.reset_counts()
                started = os.getloadavg()[0]
                got = _phase(["render", src, str(root / label), *extra], env)
                results[f"{label}_seconds"] = round(got["seconds"], 1)
                results[f"{label}_load_at_start"] = round(started, 2)
                results["tiles"] = got["tiles"]
                if server is not None:
                    results[f"{label}_bytes"] = server.bytes_sent
                    results[f"{label}_requests"] = server.requests
                    results[f"{label}_bytes_per_output_mpx"] = round(server.bytes_sent / out_mpx)
                    results[f"{label}_bytes_over_file"] = round(server.bytes_sent / file_bytes, 3)
                print(f"{label}: {got['seconds']:.1f} s", flush=True)
            for label in () if args.client_only else ("http", "s3"):
                reference = (root / "local" / "map.tif").read_bytes()
                results[f"{label}_identical"] = (root / label / "map.tif").read_bytes() == reference
    results["load_average_1min"] = load.summary()
    results["machine"] = machine()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
