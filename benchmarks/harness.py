"""What every benchmark stands on, so each script is its measurement and nothing else.

Machine facts for the JSON (CPU model and the flags that decide precision, cores, torch, GDAL),
timing (seconds per call with warm-up and device sync, the generator's tiles/s and FLOPs,
min/median over rounds), the reference pix2pix loop geopix is compared against, the rasters the
benchmarks render (a mirrored mosaic of a real scene, a synthetic map), peak memory of a process
tree, models (shipped or random), a plain table and the JSON writer.  Scripts import it as
``from harness import …`` (run from any folder: Python puts the script's folder on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "geotiffs"
VIENNA = SHARED / "vienna_30cm_epsg31256.tif"
#: CPU flags that decide what runs fast here (bf16 natively: AVX512-BF16 / AMX; fp32: AVX2, FMA, AVX-512).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


# ---- machine facts -------------------------------------------------------------------------------
def cpu() -> dict:
    """The CPU's model name and which of ``CPU_FLAGS`` it has (Linux ``/proc/cpuinfo``; else what
    ``platform`` says)."""
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags]}


def machine() -> dict:
    """What a figure was measured on: CPU, cores, Python, platform, torch (threads, GPU) and GDAL."""
    info = {
        "cpu": cpu(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(ImportError):
        import torch

        info |= {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
        if torch.cuda.is_available():
            info |= {"gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda}
    with contextlib.suppress(ImportError):
        import rasterio

        info["gdal"] = rasterio.__gdal_version__
    return info


def machine_line(info: dict | None = None) -> str:
    """``machine()`` in one line, for a benchmark's header."""
    m = info or machine()
    flags = ",".join(m["cpu"]["flags"]) or "none of " + ",".join(CPU_FLAGS)
    return (
        f"{m['cpu']['model']} ({flags}), {m['cpu_count']} cores, torch {m.get('torch', '-')} "
        f"({m.get('torch_threads', '-')} threads), GDAL {m.get('gdal', '-')}" + (f", {m['gpu']}" if "gpu" in m else "")
    )


# ---- timing --------------------------------------------------------------------------------------
def sync(device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.synchronize(device)


def per_call(fn: Callable[[], object], seconds: float, *, warmup: int = 1, device=None, burst: int = 1):
    """(seconds per call of ``fn``, calls timed): ``warmup`` calls, then calls until ``seconds`` have
    passed, synced after each run of calls.  ``burst > 1`` queues runs growing 1, 2, 4 … ``burst``
    between syncs, so GPU launches overlap the work; ``burst=1`` syncs after every call."""
    for _ in range(warmup):
        fn()
    sync(device)
    n, k, t0 = 0, 1, time.perf_counter()
    while True:
        for _ in range(k):
            fn()
        n += k
        sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return elapsed / n, n
        k = min(2 * k, burst)


def count_flops(net, tile: int, device) -> int:
    """FLOPs of one forward pass on one ``tile``² tile (fp32, counted once)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, tile, tile, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    return int(counter.get_total_flops())


def time_predict(pred, batch: int, tile: int, seconds: float, warmup: int = 2) -> dict:
    """tiles/s of ``pred.predict`` on a fixed random batch: ``warmup`` calls, then ``seconds`` of calls."""
    import torch

    device = pred.device
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, tile, tile)).astype(np.float32)
    with torch.inference_mode():
        for _ in range(max(1, warmup)):
            pred.predict(x)
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        s_per_call, n = per_call(lambda: pred.predict(x), seconds, warmup=0, device=device)
    row = {"tiles_s": batch / s_per_call, "calls": n, "seconds": round(s_per_call * n, 2)}
    if device.type == "cuda":
        row["cuda_max_mem_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return row


def spread(values: list[float]) -> dict:
    """min / median / max of repeated measurements (the median is the figure; min/max the noise)."""
    return {"rounds": len(values), "min": min(values), "median": statistics.median(values), "max": max(values)}


# ---- models --------------------------------------------------------------------------------------
def default_model() -> str:
    """The shipped sat2map generator (else a local training run's), or ``""`` when neither exists."""
    trained = ROOT / "geopix" / "weights" / "sat2map.safetensors"
    if trained.exists():
        return str(trained)
    run = ROOT / "runs" / "sat2map" / "generator.safetensors"
    return str(run) if run.exists() else ""


def random_model(tmp: Path, ngf: int, res_m: float = 0.3) -> str:
    """A random unet_256 checkpoint of width ``ngf`` (as fast as a trained one of that width)."""
    from geopix.testing import random_checkpoint

    return str(random_checkpoint(tmp / f"random_ngf{ngf}.safetensors", ngf=ngf, ground_resolution_m=res_m))


# ---- rasters -------------------------------------------------------------------------------------
def _gtiff(size: int, crs, transform, block: int = 512, **extra) -> dict:
    return {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": crs,
            "transform": transform, "tiled": True, "blockxsize": block, "blockysize": block,
            "compress": "deflate", **extra}  # fmt: skip


def mosaic(src: Path, dst: Path, size: int, res_m: float | None = None) -> Path:
    """A ``size``² tiled GeoTIFF made by repeating (mirrored) ``src``; written block by block."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(src) as s:
        data = s.read([1, 2, 3])
        tr = s.transform
        crs = s.crs
    if res_m:
        from rasterio.transform import Affine

        tr = Affine(res_m, 0, tr.c, 0, -res_m, tr.f)
    h, w = data.shape[1:]
    tile = np.concatenate(
        [np.concatenate([data, data[:, :, ::-1]], 2), np.concatenate([data[:, ::-1], data[:, ::-1, ::-1]], 2)], 1
    )
    step = 1024
    with rasterio.open(dst, "w", **_gtiff(size, crs, tr, BIGTIFF="IF_SAFER")) as out:
        for r in range(0, size, step):
            for c in range(0, size, step):
                hh, ww = min(step, size - r), min(step, size - c)
                rows = np.arange(r, r + hh) % (2 * h)
                cols = np.arange(c, c + ww) % (2 * w)
                out.write(tile[:, rows][:, :, cols], window=Window(c, r, ww, hh))
    return dst


def synthetic_map(path: Path, size: int, res: float = 0.5) -> Path:
    """A map-like raster as ``geopix render`` writes it (RGB + internal mask, the top-left quarter
    masked, UTM 33N), written in blocks."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from geopix.testing import _scene

    block = 1024
    profile = _gtiff(size, "EPSG:32633", from_origin(500000.0, 5300000.0, res, res), photometric="RGB")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size, block):
            for c in range(0, size, block):
                h, w = min(block, size - r), min(block, size - c)
                _, rgb = _scene((h, w), seed=(r // block) * 97 + c // block)
                mask = np.full((h, w), 255, np.uint8)
                rr, cc = np.mgrid[r : r + h, c : c + w]
                mask[(rr < size // 2) & (cc < size // 2)] = 0
                win = Window(c, r, w, h)
                dst.write(np.where(mask > 0, rgb.transpose(2, 0, 1), 0), window=win)
                dst.write_mask(mask, window=win)
    return path


# ---- the reference pix2pix loop ------------------------------------------------------------------
def reference_loop(src: Path, out: Path, model: str, device: str = "auto") -> dict:
    """The pix2pix reference style geopix is measured against: one 256² tile at a time, batch 1, no
    overlap or blending, fp32, contiguous layout; rasterio reads each window (edge tiles
    reflect-padded), ``net`` runs directly, each tile goes into a tiled deflate GTiff ``out``.
    Returns the raster size, tiles, seconds (model load included, imports not) and torch threads."""
    import rasterio
    import torch
    from rasterio.windows import Window

    from geopix.infer import resolve_device
    from geopix.models.checkpoint import load_checkpoint
    from geopix.models.generator import palette_to_rgb

    t0 = time.perf_counter()
    dev = resolve_device(device)
    loaded = load_checkpoint(model)
    net = loaded.net.to(dev).eval()
    spec = loaded.spec
    palette = torch.tensor(spec.palette, dtype=torch.float32, device=dev) if spec.head == "palette" else None
    t = 256
    n = 0
    with rasterio.open(src) as s:
        profile = _gtiff(s.width, s.crs, s.transform, block=t, BIGTIFF="IF_SAFER")
        profile["height"] = s.height
        with rasterio.open(out, "w", **profile) as dst:
            for r in range(0, s.height, t):
                for c in range(0, s.width, t):
                    win = Window(c, r, min(t, s.width - c), min(t, s.height - r))
                    a = s.read([1, 2, 3], window=win)
                    h, w = a.shape[1:]
                    if h < t or w < t:
                        pad = ((0, 0), (0, t - h), (0, t - w))
                        a = np.pad(a, pad, mode="reflect" if t - h < h and t - w < w else "constant")
                    x = torch.from_numpy(a).float().div_(127.5).sub_(1.0).unsqueeze(0).to(dev)
                    with torch.no_grad():
                        y = net(x)
                        rgb = palette_to_rgb(y, palette, spec.palette_sharpness) if palette is not None else (
                            (y.clamp(-1, 1) + 1.0) * 127.5
                        )  # fmt: skip
                    tile = rgb[0].round().clamp(0, 255).to(torch.uint8).cpu().numpy()
                    dst.write(tile[:, :h, :w], window=win)
                    n += 1
    doc = {"width": profile["width"], "height": profile["height"], "tiles": n,
           "seconds": time.perf_counter() - t0, "torch_threads": torch.get_num_threads()}  # fmt: skip
    if dev.type == "cuda":
        doc["cuda_max_mem_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return doc


# ---- memory --------------------------------------------------------------------------------------
class PeakRSS:
    """Samples the RSS of this process and all its descendants (Dask workers included)."""

    def __init__(self, cmd: list[str] | None = None, interval: float = 0.1) -> None:
        import psutil

        self.cmd = cmd
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self.per_process: dict[str, int] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                rss = p.memory_info().rss
                total += rss
                key = "client" if p.pid == self.proc.pid else f"{p.pid}:{' '.join(p.cmdline()[-2:])[-40:]}"
                self.per_process[key] = max(self.per_process.get(key, 0), rss)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        """With ``cmd``: run it to completion and measure its process tree only."""
        if self.cmd is not None:
            import psutil

            self.proc = psutil.Popen(self.cmd)
            self._t.start()
            if self.proc.wait() != 0:
                raise SystemExit(f"{' '.join(self.cmd)} failed")
            return self
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


# ---- output --------------------------------------------------------------------------------------
def table(rows: list[dict], cols: list[tuple]) -> str:
    """A plain-text table: ``cols`` are (key, header, format spec[, minimum width]); missing values
    print as ``-``.  The minimum widths keep rows printed one at a time under one header aligned."""

    def cell(row: dict, key: str, fmt: str) -> str:
        v = row.get(key)
        if v is None:
            return "-"
        try:
            return format(v, fmt)
        except (TypeError, ValueError):
            return str(v)

    body = [[cell(r, c[0], c[2]) for c in cols] for r in rows]
    heads = [c[1] for c in cols]
    widths = [
        max(len(h), c[3] if len(c) > 3 else 0, *(len(b[i]) for b in body))
        for i, (h, c) in enumerate(zip(heads, cols, strict=True))
    ]
    left = [c[2] == "" for c in cols]  # text columns read better left-aligned, numbers right

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if lft else c.rjust(w) for c, w, lft in zip(cells, widths, left, strict=True)
        ).rstrip()

    return "\n".join([line(heads), line(["-" * w for w in widths]), *(line(b) for b in body)])


def write_json(path: Path | str | None, doc: dict) -> None:
    """Write ``doc`` to ``path`` (indented; paths and other objects as strings) and say so; no path,
    nothing."""
    if path:
        Path(path).write_text(json.dumps(doc, indent=2, default=str))
        print(f"wrote {path}", flush=True)
