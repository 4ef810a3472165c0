"""GPU benchmark: bf16 matmul peak, host↔device bandwidth, unet_256 tiles/s and % of peak, bf16
colour fidelity on real imagery, and the end-to-end render on the GPU.

Prints tables and a summary and (with ``--json PATH``) writes JSON; nothing asserts.

How to run it on a GPU machine (Linux, an NVIDIA driver for CUDA 12):

    cd geopix                                   # this repository, with ../shared/data/geotiffs beside it
    python -m venv .venv && . .venv/bin/activate
    pip install torch --index-url https://download.pytorch.org/whl/cu126   # the CUDA build; see pytorch.org
    pip install -e .
    python -c "import torch; print(torch.cuda.get_device_name(0))"        # must name the GPU
    python benchmarks/bench_gpu.py --json gpu.json                         # ~10 min on an H100
    # more: max-autotune compile (minutes per shape), CUDA graphs, and the shipped ngf-32 model too
    python benchmarks/bench_gpu.py --compile-mode max-autotune --cuda-graphs --shipped --json gpu.json

Without CUDA it says so and exits 1; ``--smoke`` runs a reduced version on the CPU instead (a
1024² matmul, an ngf-8 U-Net at batch 1 and 2, 8 fidelity tiles, a 1024² e2e render) to check the
script itself in well under a minute:

    python benchmarks/bench_gpu.py --smoke --json /tmp/gpu_smoke.json

Sections:

* **peak**: dense ``--matmul-n``² @ ``--matmul-n``² matmuls in bf16 / fp16 / tf32, TFLOP/s
  (2·n³ per matmul).  The bf16 figure is the reference for every "% of peak" below.
* **copy**: host→device and device→host bandwidth of a ``--copy-mib`` MiB tensor, pinned and
  pageable, GB/s.
* **unet**: a random unet_256 (``--ngf``, default 64 = the paper's generator, ≈12.1 GFLOP per 256²
  tile; the counted value is printed) and, with ``--shipped``, the shipped model: the network alone
  on device-resident input (no host copies), channels_last, fp32 / bf16 / fp16 autocast, over
  ``--batches``; then ``torch.compile`` (``--compile-mode``) and, with ``--cuda-graphs``, a captured
  CUDA graph, at each precision's best batch; and ``Predictor.predict`` (host array in and out, as
  render calls it) at that batch.  fp32 convolutions use TF32 where torch allows it (its default
  for cuDNN).  ``torch.backends.cudnn.benchmark`` is on here (``--no-cudnn-benchmark``), off in e2e.
* **fidelity**: bf16 and fp16 map colours against fp32 on every 256² tile of the shared GeoTIFFs
  (``bench_precision.real_tiles``), shipped model; mean and max |diff| in 0..255 (goal: mean ≤ 2).
* **e2e**: ``bench_perf.py e2e --device cuda`` (a ``--e2e-size``² Vienna mosaic, render + pyramid,
  fresh process) and its ratio to the raw generator at the same batch and precision.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_perf import bench_e2e
from harness import (
    VIENNA,
    count_flops,
    default_model,
    machine,
    mosaic,
    per_call,
    random_model,
    sync,
    table,
    time_predict,
    write_json,
)


def timed(fn, device, seconds: float, warmup: int = 3) -> tuple[float, int]:
    """Seconds per call of ``fn``: ``warmup`` calls, then at least ``seconds`` of calls, queued in
    growing runs (1, 2, 4, .. 64) synchronised after each run, so launches overlap the GPU work."""
    return per_call(fn, seconds, warmup=warmup, device=device, burst=64)


def _err(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


# ---- peak and copies -------------------------------------------------------------------------
def bench_peak(device, n: int, seconds: float) -> dict:
    import torch

    out = {"n": n}
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("tf32", torch.float32)):
        if device.type == "cpu" and name == "fp16":
            continue
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
        try:
            g = torch.Generator(device=device).manual_seed(0)
            a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
            b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
            per, _ = timed(lambda a=a, b=b: torch.mm(a, b), device, seconds)
            out[f"{name}_tflop_s"] = round(2 * n**3 / per / 1e12, 2)
            del a, b
        except Exception as exc:
            out[f"{name}_error"] = _err(exc)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev
        print(f"  {n}² matmul {name}: {out.get(f'{name}_tflop_s', out.get(f'{name}_error'))} TFLOP/s", flush=True)
    return out


def bench_copy(device, mib: int, reps: int = 10) -> dict:
    import torch

    if device.type != "cuda":
        print("  copies: no device to copy to (CPU smoke run)", flush=True)
        return {"skipped": "no CUDA device"}
    nbytes = mib * 2**20
    out = {"mib": mib}
    dev = torch.empty(nbytes, dtype=torch.uint8, device=device)
    for kind in ("pageable", "pinned"):
        host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=kind == "pinned")
        host.fill_(1)
        nb = kind == "pinned"
        per, _ = timed(lambda host=host, nb=nb: dev.copy_(host, non_blocking=nb), device, 0.5)
        out[f"h2d_{kind}_gb_s"] = round(nbytes / per / 1e9, 2)
        per, _ = timed(lambda host=host, nb=nb: host.copy_(dev, non_blocking=nb), device, 0.5)
        out[f"d2h_{kind}_gb_s"] = round(nbytes / per / 1e9, 2)
        print(
            f"  copy {mib} MiB {kind}: host→device {out[f'h2d_{kind}_gb_s']} GB/s, "
            f"device→host {out[f'd2h_{kind}_gb_s']} GB/s",
            flush=True,
        )
    return out


# ---- unet_256 throughput ---------------------------------------------------------------------
UNET_COLS = [
    ("mode", "mode", "", 20),
    ("precision", "prec", ""),
    ("batch", "batch", "d"),
    ("tiles_s", "tiles/s", ".1f", 9),
    ("mpx_s", "Mpx/s", ".1f", 7),
    ("tflop_s", "TFLOP/s", ".2f"),
    ("pct_of_bf16_peak", "% bf16 peak", ".1f"),
    ("cuda_max_mem_mib", "cuda MiB", ".0f", 8),
    ("note", "note", ""),
]


def _forward(net, x, dtype, device):
    import torch

    def fn():
        with torch.inference_mode():
            if dtype is None:
                return net(x)
            with torch.autocast(device.type, dtype=dtype, cache_enabled=False):
                return net(x)

    return fn


def _graph_forward(net, x, dtype, device):
    """A CUDA graph of one forward pass on the static input ``x``; returns its replay."""
    import torch

    def body():
        if dtype is None:
            return net(x)
        with torch.autocast(device.type, dtype=dtype, cache_enabled=False):
            return net(x)

    with torch.no_grad():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                body()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            body()
    return graph.replay


def _row(name: str, mode: str, prec: str, batch: int, per: float, flops: int, peak: float | None, device) -> dict:
    import torch

    tiles_s = batch / per
    row = {
        "model": name,
        "mode": mode,
        "precision": prec,
        "batch": batch,
        "tiles_s": tiles_s,
        "mpx_s": tiles_s * 256 * 256 / 1e6,
        "tflop_s": tiles_s * flops / 1e12,
    }
    if peak:
        row["pct_of_bf16_peak"] = 100 * row["tflop_s"] / peak
    if device.type == "cuda":
        row["cuda_max_mem_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def bench_unet(args: argparse.Namespace, device, model: str, name: str, peak: float | None) -> dict:
    import torch

    from geopix.infer import Predictor
    from geopix.models.checkpoint import load_checkpoint

    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    loaded = load_checkpoint(model)
    net = loaded.net.to(device).eval().to(memory_format=torch.channels_last)
    flops = count_flops(net, 256, device)
    print(
        f"{name}: ngf {loaded.spec.ngf}, {loaded.spec.head} head, counted {flops / 1e9:.3f} GFLOP per 256² tile",
        flush=True,
    )
    print("\n".join("  " + ln for ln in table([], UNET_COLS).split("\n")), flush=True)
    precisions = [p for p in args.precisions.split(",") if p]
    if device.type == "cpu":
        precisions = [p for p in precisions if p != "fp16"]
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        print("  " + table([row], UNET_COLS).splitlines()[-1], flush=True)

    def run(mode: str, prec: str, batch: int, make) -> dict | None:
        x = torch.randn(batch, 3, 256, 256, device=device).contiguous(memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            t0 = time.perf_counter()
            fn = make(x)
            fn()  # compiles / captures
            sync(device)
            setup = time.perf_counter() - t0
            per, _ = timed(fn, device, args.seconds)
            row = _row(name, mode, prec, batch, per, flops, peak, device)
            if mode != "eager":
                row["setup_seconds"] = setup
                row["note"] = f"setup {setup:.1f} s"
        except Exception as exc:
            row = {"model": name, "mode": mode, "precision": prec, "batch": batch, "note": _err(exc)[:90]}
            row["error"] = _err(exc)
            row["oom"] = _is_oom(exc)
        finally:
            del x
        emit(row)
        return row if "tiles_s" in row else None

    best: dict[str, dict] = {}
    for prec in precisions:
        dt = dtypes[prec]
        for b in [int(v) for v in args.batches.split(",")]:
            row = run("eager", prec, b, lambda x, dt=dt: _forward(net, x, dt, device))
            if row is None and rows[-1].get("oom"):
                break  # larger batches will not fit either
            if row and (prec not in best or row["tiles_s"] > best[prec]["tiles_s"]):
                best[prec] = row
    for prec, b in best.items():
        dt, batch = dtypes[prec], b["batch"]
        if args.compile:
            torch._dynamo.reset()
            mode = None if args.compile_mode == "default" else args.compile_mode
            compiled = torch.compile(net, mode=mode)
            row = run(
                f"compile:{args.compile_mode}", prec, batch, lambda x, c=compiled, dt=dt: _forward(c, x, dt, device)
            )
            if row:
                row["speedup_vs_eager"] = row["tiles_s"] / b["tiles_s"]
        if args.cuda_graphs and device.type == "cuda":
            row = run("cuda-graph", prec, batch, lambda x, dt=dt: _graph_forward(net, x, dt, device))
            if row:
                row["speedup_vs_eager"] = row["tiles_s"] / b["tiles_s"]
        # As render calls it: a host array in, palette decoding, a host array out.
        pred = Predictor(loaded.spec, net, device, True, prec)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            r = time_predict(pred, batch, 256, args.seconds)
            row = _row(name, "Predictor.predict", prec, batch, batch / r["tiles_s"], flops, peak, device)
            row["note"] = f"{100 * r['tiles_s'] / b['tiles_s']:.0f} % of the net alone (host copies, decoding)"
        except Exception as exc:
            row = {"model": name, "mode": "Predictor.predict", "precision": prec, "batch": batch, "note": _err(exc)}
        emit(row)
    return {
        "model": name,
        "path": Path(model).name,
        "ngf": loaded.spec.ngf,
        "head": loaded.spec.head,
        "flops_per_tile": flops,
        "gflop_per_tile": round(flops / 1e9, 3),
        "runs": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows],
        "best_eager": {p: round(r["tiles_s"], 2) for p, r in best.items()},
        "best_eager_batch": {p: r["batch"] for p, r in best.items()},
    }


# ---- bf16 / fp16 colour fidelity on real imagery --------------------------------------------
def bench_fidelity(args: argparse.Namespace, device, model: str) -> dict:
    from bench_precision import SHARED, real_tiles, run

    from geopix.infer import Predictor
    from geopix.models.checkpoint import load_checkpoint

    folder = Path(args.geotiffs or SHARED)
    if not folder.is_dir():
        print(f"  fidelity skipped: {folder} is absent (pass --geotiffs DIR)", flush=True)
        return {"skipped": f"{folder} absent"}
    loaded = load_checkpoint(model)
    tiles = real_tiles(loaded.spec.ground_resolution_m, loaded.spec, folder=folder)
    if args.fidelity_tiles and len(tiles) > args.fidelity_tiles:
        tiles = tiles[np.linspace(0, len(tiles) - 1, args.fidelity_tiles).astype(int)]
    ref, _ = run(Predictor(loaded.spec, loaded.net, device, True, "fp32"), tiles, args.fidelity_batch)
    ref8 = np.clip(np.rint(ref), 0, 255)
    out = {"model": Path(model).name, "tiles": len(tiles), "goal_mean_abs_diff_max": 2.0}
    precisions = ["bf16", "fp16"] if device.type == "cuda" or args.force_fp16 else ["bf16"]
    for prec in precisions:
        pred_out, _ = run(Predictor(loaded.spec, loaded.net, device, True, prec), tiles, args.fidelity_batch)
        diff = np.abs(np.clip(np.rint(pred_out), 0, 255) - ref8)
        per_px = diff.max(axis=1)
        out[prec] = {
            "mean_abs_diff": round(float(diff.mean()), 3),
            "max_abs_diff": int(diff.max()),
            "p99_abs_diff": float(np.percentile(per_px, 99)),
            "pixels_diff_gt_5_pct": round(float((per_px > 5).mean() * 100), 3),
            "meets_goal": bool(diff.mean() <= 2.0),
        }
        r = out[prec]
        print(
            f"  {prec} vs fp32 on {len(tiles)} real tiles ({Path(model).name}): mean |diff| {r['mean_abs_diff']}, "
            f"max {r['max_abs_diff']}, p99 {r['p99_abs_diff']}, pixels off by >5: {r['pixels_diff_gt_5_pct']} % "
            f"(goal mean ≤ 2: {'met' if r['meets_goal'] else 'NOT met'})",
            flush=True,
        )
    return out


# ---- driver ----------------------------------------------------------------------------------
def summary(res: dict) -> None:
    rows = []
    pk = res.get("peak", {})
    for k in ("bf16", "fp16", "tf32"):
        if f"{k}_tflop_s" in pk:
            rows.append({"what": f"{pk['n']}² matmul {k}", "value": f"{pk[f'{k}_tflop_s']} TFLOP/s"})
    cp = res.get("copy", {})
    for k in ("h2d_pinned", "d2h_pinned", "h2d_pageable", "d2h_pageable"):
        if f"{k}_gb_s" in cp:
            rows.append({"what": f"copy {k.replace('_', ' ')}", "value": f"{cp[f'{k}_gb_s']} GB/s"})
    for u in res.get("unet", []):
        rows.append({"what": f"{u['model']} FLOPs/tile", "value": f"{u['gflop_per_tile']} GFLOP"})
        for prec in ("fp32", "bf16", "fp16"):
            cands = [r for r in u["runs"] if r.get("precision") == prec and "tiles_s" in r]
            cands = [r for r in cands if r["mode"] != "Predictor.predict"]
            if not cands:
                continue
            b = max(cands, key=lambda r: r["tiles_s"])
            pct = f", {b['pct_of_bf16_peak']:.1f} % of bf16 peak" if "pct_of_bf16_peak" in b else ""
            rows.append(
                {
                    "what": f"{u['model']} {prec} best",
                    "value": f"{b['tiles_s']:.1f} tiles/s",
                    "detail": f"{b['mode']}, batch {b['batch']}, {b['tflop_s']:.2f} TFLOP/s{pct}",
                }
            )
    fid = res.get("fidelity", {})
    for prec in ("bf16", "fp16"):
        if prec in fid:
            f = fid[prec]
            rows.append(
                {
                    "what": f"{prec} vs fp32 colours",
                    "value": f"mean {f['mean_abs_diff']}, max {f['max_abs_diff']}",
                    "detail": f"{fid['tiles']} real tiles; goal mean ≤ 2 {'met' if f['meets_goal'] else 'NOT met'}",
                }
            )
    e = res.get("e2e")
    if e:
        rows.append(
            {
                "what": "e2e render",
                "value": f"{e['render_mpx_s']} Mpx/s",
                "detail": f"{e['raster']}², {e['render_seconds']} s, {e['precision']}, batch {e['batch']}",
            }
        )
        rows.append(
            {
                "what": "e2e/raw",
                "value": f"{e['e2e_vs_raw']}",
                "detail": f"{e['e2e_tiles_s_planned']} / {e['raw_tiles_s']} tiles/s",
            }
        )
    print("\nsummary")
    print(table(rows, [("what", "what", ""), ("value", "value", ""), ("detail", "detail", "")]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="no CUDA needed: a reduced run on the CPU")
    ap.add_argument("--device", default="cuda", help="cuda | cuda:N (cpu with --smoke)")
    ap.add_argument("--sections", default="peak,copy,unet,fidelity,e2e")
    ap.add_argument("--matmul-n", type=int, default=8192)
    ap.add_argument("--matmul-seconds", type=float, default=2.0)
    ap.add_argument("--copy-mib", type=int, default=1024)
    ap.add_argument("--ngf", type=int, default=64, help="the random unet_256's width (64: the paper's)")
    ap.add_argument("--shipped", action="store_true", help="also sweep the shipped model")
    ap.add_argument("--batches", default="8,16,32,64,128")
    ap.add_argument("--precisions", default="fp32,bf16,fp16")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    ap.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile (default: on, off in --smoke)",
    )
    ap.add_argument("--compile-mode", default="default", help="default | max-autotune | reduce-overhead | ...")
    ap.add_argument("--cuda-graphs", action="store_true", help="also time a captured CUDA graph of the eager net")
    ap.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false")
    ap.add_argument("--model", default="", help="fidelity / e2e model (default: the shipped one)")
    ap.add_argument("--fidelity-tiles", type=int, default=0, help="use this many real tiles (0: all)")
    ap.add_argument("--fidelity-batch", type=int, default=32)
    ap.add_argument("--force-fp16", action="store_true", help="fidelity: fp16 on the CPU too")
    ap.add_argument("--e2e-size", type=int, default=8192)
    ap.add_argument("--e2e-batch", type=int, default=32)
    ap.add_argument("--e2e-chunk", type=int, default=2048)
    ap.add_argument("--e2e-precision", default="bf16")
    ap.add_argument("--e2e-ngf", type=int, default=0, help="e2e with a random model of this width (0: --model)")
    ap.add_argument("--scene", default=str(VIENNA), help="e2e: the aerial GeoTIFF the mosaic is built from")
    ap.add_argument("--geotiffs", default="", help="fidelity: folder of aerial GeoTIFFs (default: ../shared's)")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    import torch

    if args.smoke:
        if not torch.cuda.is_available():
            args.device = "cpu"
        args.matmul_n, args.matmul_seconds = min(args.matmul_n, 1024), min(args.matmul_seconds, 0.3)
        args.ngf, args.batches, args.seconds = 8, "1,2", min(args.seconds, 0.3)
        args.compile = bool(args.compile)
        args.fidelity_tiles, args.fidelity_batch = args.fidelity_tiles or 8, min(args.fidelity_batch, 4)
        args.e2e_size, args.e2e_batch, args.e2e_chunk = min(args.e2e_size, 1024), min(args.e2e_batch, 4), 1024
        print("smoke run: reduced sizes" + (" on the CPU (no CUDA)" if args.device == "cpu" else ""), flush=True)
    elif not torch.cuda.is_available():
        raise SystemExit(
            f"bench_gpu.py: torch {torch.__version__} sees no CUDA GPU. Install the CUDA build of torch "
            "(pip install torch --index-url https://download.pytorch.org/whl/cu126, see pytorch.org) on a "
            "machine with an NVIDIA GPU, or pass --smoke for a reduced CPU run."
        )
    args.compile = args.compile is not False
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    sections = set(args.sections.split(","))
    res: dict = {"machine": machine(), "args": vars(args), "device": str(device)}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        res["gpu"] = {"name": p.name, "sms": p.multi_processor_count, "memory_gib": round(p.total_memory / 2**30, 1)}
        print(f"{p.name}: {p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB, torch {torch.__version__}")
    shipped = args.model or default_model()
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        tmp = Path(tmp)
        peak = None
        if "peak" in sections:
            print("peak:", flush=True)
            res["peak"] = bench_peak(device, args.matmul_n, args.matmul_seconds)
            peak = res["peak"].get("bf16_tflop_s")
        if "copy" in sections:
            print("copy:", flush=True)
            res["copy"] = bench_copy(device, args.copy_mib)
        if "unet" in sections:
            print("unet:", flush=True)
            models = [(f"unet_256 ngf{args.ngf} (random)", random_model(tmp, args.ngf, 0.3))]
            if args.shipped and shipped:
                models.append((f"shipped {Path(shipped).stem}", shipped))
            res["unet"] = [bench_unet(args, device, m, name, peak) for name, m in models]
        torch.backends.cudnn.benchmark = False  # as render runs
        if "fidelity" in sections:
            print("fidelity:", flush=True)
            res["fidelity"] = bench_fidelity(args, device, shipped)
        if "e2e" in sections:
            print("e2e:", flush=True)
            scene = Path(args.scene)
            if not scene.exists():
                print(f"  e2e skipped: {scene} is absent (pass --scene AERIAL.tif)", flush=True)
                res["e2e"] = None
            else:
                model = random_model(tmp, args.e2e_ngf, 0.3) if args.e2e_ngf else shipped
                e2e_args = argparse.Namespace(
                    device=str(device),
                    size=args.e2e_size,
                    tile_size=256,
                    overlap=64,
                    chunk=args.e2e_chunk,
                    batch=args.e2e_batch,
                    precision=args.e2e_precision,
                    workers=0,
                    seconds=args.seconds,
                )
                src = mosaic(scene, tmp / "mosaic.tif", args.e2e_size)
                res["e2e"] = bench_e2e(e2e_args, model, src, tmp)
    summary(res)
    write_json(args.json, res)


if __name__ == "__main__":
    sys.exit(main())
