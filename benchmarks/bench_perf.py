"""Performance: raw generator sweep, end-to-end render + XYZ pyramid, the reference pix2pix loop, peak memory.

Prints tables and (with ``--json PATH``) writes JSON; nothing asserts (targets are read by people).

    python benchmarks/bench_perf.py raw      [--device auto] [--model M | --ngf N] [--batches 1,2,4,8,16]
                                             [--precisions fp32,bf16,fp16] [--force-fp16] [--seconds 5] [--no-compile]
    python benchmarks/bench_perf.py e2e      [--size 8192] [--tile-size 256 --overlap 32 --batch 8 --chunk 2048]
                                             [--precision auto] [--workers W]
    python benchmarks/bench_perf.py baseline [--size 8192]
    python benchmarks/bench_perf.py all      [...]   # raw + e2e + baseline + peak memory, and a summary table
    python benchmarks/bench_perf.py ratio    [--rounds 3] [e2e options]   # e2e/raw with the machine's drift averaged

    # smoke test, < 1 minute on 2 cores:
    python benchmarks/bench_perf.py all --size 1024 --seconds 1 --batches 1,4 --no-compile

* **raw**: tiles/s of ``Predictor.predict`` (host array in, host array out, as render calls it) on
  ``--tile-size``² tiles, for each precision × channels_last × batch size; then ``torch.compile`` on
  the best eager configuration (compile failures are reported, not raised).  fp16 is skipped on
  CPU unless ``--force-fp16`` (it is emulated there, ~50x slower).  GFLOP/s use the FLOPs of one
  tile counted once with ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add).
* **e2e**: a ``--size``² mosaic of ``../shared/data/geotiffs/vienna_30cm_epsg31256.tif`` rendered with
  ``resample=False`` (the model runs on the 0.3 m source grid), then cut into an XYZ pyramid, in a
  fresh process (so its peak RSS is its own).  The raw generator is timed at the same batch and
  precision in the same run for the e2e/raw ratio.
* **baseline**: the reference pix2pix style on the same mosaic, in a fresh process: one 256² tile at
  a time, batch 1, no overlap or blending, fp32, contiguous layout; rasterio reads each window
  (edge tiles reflect-padded), ``net`` runs directly, each tile goes into a tiled deflate GTiff.
* **ratio**: ``--rounds`` rounds of raw, a fresh-process render (no pyramid), raw again; each round's
  ratio is the render's planned tiles/s over the mean of the two raw figures around it, and the
  median over rounds is printed.  On a shared 2-core machine raw alone drifts by ±10 % between
  8-second runs, more than the effects being measured.
* **memory**: peak RSS of the e2e and baseline process trees (``bench_render.PeakRSS``), and
  ``torch.cuda.max_memory_allocated()`` where there is a GPU.

Throughput is wall time on whatever else the machine is doing; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import (
    VIENNA,
    PeakRSS,
    count_flops,
    default_model,
    machine,
    mosaic,
    random_model,
    reference_loop,
    spread,
    table,
    time_predict,
    write_json,
)

HERE = Path(__file__).resolve()


# ---- helpers ---------------------------------------------------------------------------------
def resolve_model_path(args: argparse.Namespace, tmp: Path) -> str:
    """``--ngf N``: a random unet_256 checkpoint of that width; else ``--model`` or the shipped model."""
    if args.ngf:
        return random_model(tmp, args.ngf, 0.3)
    model = args.model or default_model()
    if not model:
        raise SystemExit("no model: pass --model PATH or --ngf N (a random checkpoint)")
    return model


def _rates(row: dict, tile: int, flops: int) -> dict:
    row["mpx_s"] = row["tiles_s"] * tile * tile / 1e6
    row["gflop_s"] = row["tiles_s"] * flops / 1e9
    return row


# ---- a. raw generator -----------------------------------------------------------------------
RAW_COLS = [
    ("precision", "precision", ""),
    ("channels_last", "ch_last", ""),
    ("compile", "compile", "", 12),
    ("batch", "batch", "d"),
    ("tiles_s", "tiles/s", ".2f", 8),
    ("mpx_s", "Mpx/s", ".2f", 6),
    ("gflop_s", "GFLOP/s", ".1f", 8),
    ("cuda_max_mem_mib", "cuda MiB", ".0f"),
    ("note", "note", ""),
]


def bench_raw(args: argparse.Namespace, model: str) -> dict:
    import torch

    from geopix.infer import Predictor, resolve_device
    from geopix.models.checkpoint import load_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    loaded = load_checkpoint(model)
    tile = args.tile_size
    flops = count_flops(copy.deepcopy(loaded.net).to(device).eval(), tile, device)
    precisions = [p for p in args.precisions.split(",") if p]
    skipped = []
    if device.type == "cpu" and "fp16" in precisions and not args.force_fp16:
        precisions.remove("fp16")
        skipped.append("fp16 on CPU (emulated, ~50x slower; --force-fp16 runs it)")
    layouts = {"both": [True, False], "on": [True], "off": [False]}[args.channels_last]
    batches = [int(b) for b in args.batches.split(",")]
    print(
        f"raw generator: {Path(model).name} (ngf {loaded.spec.ngf}, {loaded.spec.head} head) on {device}, "
        f"{torch.get_num_threads()} torch threads, {tile}² tiles, {flops / 1e9:.2f} GFLOP/tile, "
        f"{args.seconds:g} s per measurement",
        flush=True,
    )
    for s in skipped:
        print(f"  skipped: {s}", flush=True)
    rows = []
    print("\n".join("  " + ln for ln in table([], RAW_COLS).split("\n")), flush=True)
    for prec in precisions:
        for cl in layouts:
            pred = Predictor(loaded.spec, copy.deepcopy(loaded.net), device, cl, prec)
            for b in batches:
                row = {"precision": pred.precision, "channels_last": cl, "compile": False, "batch": b}
                row |= _rates(time_predict(pred, b, tile, args.seconds), tile, flops)
                rows.append(row)
                print("  " + table([row], RAW_COLS).splitlines()[-1], flush=True)
            del pred
    best = max(rows, key=lambda r: r["tiles_s"]) if rows else None
    compiled = None
    if best is not None and args.compile:
        compiled = {k: best[k] for k in ("precision", "channels_last", "batch")} | {"compile": args.compile_mode}
        pred = Predictor(loaded.spec, copy.deepcopy(loaded.net), device, best["channels_last"], best["precision"])
        try:
            pred.net = torch.compile(pred.net, mode=None if args.compile_mode == "default" else args.compile_mode)
            t0 = time.perf_counter()
            pred.predict(np.zeros((best["batch"], 3, tile, tile), np.float32))  # compiles
            compiled["compile_seconds"] = round(time.perf_counter() - t0, 1)
            compiled |= _rates(time_predict(pred, best["batch"], tile, args.seconds), tile, flops)
            compiled["speedup_vs_eager"] = round(compiled["tiles_s"] / best["tiles_s"], 3)
            compiled["note"] = f"compiled in {compiled['compile_seconds']} s"
        except Exception as exc:  # a missing compiler, an unsupported op: report and go on
            msg = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]
            compiled["error"] = msg
            compiled["note"] = "compile failed: " + msg[:80]
        rows.append(compiled)
        print("  " + table([compiled], RAW_COLS).splitlines()[-1], flush=True)
    print("raw generator results:\n" + table(rows, RAW_COLS), flush=True)
    return {
        "benchmark": "raw",
        "model": Path(model).name,
        "model_ngf": loaded.spec.ngf,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "tile": tile,
        "flops_per_tile": flops,
        "seconds_per_measurement": args.seconds,
        "skipped": skipped,
        "runs": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows],
        "best_eager": best,
        "compiled": compiled,
    }


def raw_at(args: argparse.Namespace, model: str) -> dict:
    """Raw tiles/s at the e2e settings (batch, precision, channels_last on) for the e2e/raw ratio."""
    import torch

    from geopix.infer import Predictor, resolve_device
    from geopix.models.checkpoint import load_checkpoint

    device = resolve_device(args.device)
    loaded = load_checkpoint(model)
    pred = Predictor(loaded.spec, loaded.net, device, True, args.precision)
    row = time_predict(pred, args.batch, args.tile_size, args.seconds)
    row |= {"precision": pred.precision, "batch": args.batch, "torch_threads": torch.get_num_threads()}
    return row


# ---- b. end-to-end render + pyramid (child process) -----------------------------------------
def child_e2e(args: argparse.Namespace) -> None:
    import torch

    from geopix.config import InferConfig, RenderConfig, TileConfig
    from geopix.pipeline import render
    from geopix.pyramid import PyramidConfig, build_pyramid

    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    out = Path(args.out)
    cfg = RenderConfig(
        input=Path(args.src),
        output_dir=out,
        model=args.model,
        tiles=TileConfig(args.tile_size, args.overlap, args.chunk),
        infer=InferConfig(device=args.device, batch_size=args.batch, precision=args.precision),
        resample=False,
        workers=args.workers or None,
        overwrite=True,
    )
    with PeakRSS() as rss_render:
        res = render(cfg)
    t0 = time.perf_counter()
    with PeakRSS() as rss_pyr:
        pyr = None
        if not args.no_pyramid:
            pyr = build_pyramid(res.map_path, out / "xyz", PyramidConfig(overwrite=True), workers=args.workers or None)
    pyramid_s = time.perf_counter() - t0
    doc = {
        "width": res.width,
        "height": res.height,
        "tiles": res.tiles,
        "tiles_run": res.tiles_run,
        "tiles_cached": res.tiles_cached,
        "blocks": res.blocks,
        "precision": res.precision,
        "render_seconds": res.seconds,
        "stage_seconds": res.stage_seconds,
        "pyramid_seconds": pyramid_s,
        "pyramid_tiles": sum(pyr.tiles_per_zoom.values()) if pyr else 0,
        "pyramid_zooms": [pyr.minzoom, pyr.maxzoom] if pyr else [],
        "peak_rss_render_gib": rss_render.peak / 2**30,
        "peak_rss_pyramid_gib": rss_pyr.peak / 2**30,
    }
    if cuda:
        doc["cuda_max_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
    Path(args.result).write_text(json.dumps(doc))


def _child(kind: str, args: argparse.Namespace, model: str, src: Path, tmp: Path) -> tuple[dict, float, PeakRSS]:
    """Run ``kind`` (``_e2e`` / ``_baseline``) in a fresh interpreter; measure its tree's peak RSS."""
    result = tmp / f"{kind}.json"
    cmd = [sys.executable, str(HERE), kind, "--src", str(src), "--out", str(tmp / kind.strip("_")),
           "--result", str(result), "--model", model, "--device", args.device,
           "--tile-size", str(args.tile_size), "--overlap", str(args.overlap), "--chunk", str(args.chunk),
           "--batch", str(args.batch), "--precision", args.precision, "--workers", str(args.workers)]  # fmt: skip
    if args.no_pyramid:
        cmd.append("--no-pyramid")
    t0 = time.perf_counter()
    with PeakRSS(cmd) as rss:
        pass
    wall = time.perf_counter() - t0
    return json.loads(result.read_text()), wall, rss


E2E_STAGES = ("load", "read", "infer", "blend", "write", "finalize", "pyramid")


def bench_e2e(args: argparse.Namespace, model: str, src: Path, tmp: Path) -> dict:
    raw = raw_at(args, model)
    print(
        f"raw generator at the e2e settings: {raw['tiles_s']:.2f} tiles/s "
        f"(batch {raw['batch']}, {raw['precision']}, {raw['torch_threads']} torch threads)",
        flush=True,
    )
    doc, wall, rss = _child("_e2e", args, model, src, tmp)
    mpx = doc["width"] * doc["height"] / 1e6
    stages = dict(doc["stage_seconds"])
    stages["pyramid"] = doc["pyramid_seconds"]
    total_stage = sum(stages.get(k, 0.0) for k in E2E_STAGES)
    planned_s = doc["tiles"] / doc["render_seconds"]
    out = {
        "benchmark": "e2e",
        "model": Path(model).name,
        "raster": args.size,
        "tile": args.tile_size,
        "overlap": args.overlap,
        "chunk": args.chunk,
        "batch": args.batch,
        "precision": doc["precision"],
        "workers": args.workers or "default (1 in-process worker, a task thread per core)",
        "map_mpx": round(mpx, 2),
        "tiles_planned": doc["tiles"],
        "tiles_executed": doc["tiles_run"],
        "render_seconds": round(doc["render_seconds"], 2),
        "pyramid_seconds": round(doc["pyramid_seconds"], 2),
        "pyramid_tiles": doc["pyramid_tiles"],
        "pyramid_zooms": doc["pyramid_zooms"],
        "process_wall_seconds": round(wall, 2),
        "render_mpx_s": round(mpx / doc["render_seconds"], 3),
        "render_plus_pyramid_mpx_s": round(mpx / (doc["render_seconds"] + doc["pyramid_seconds"]), 3),
        "e2e_tiles_s_planned": round(planned_s, 2),
        "e2e_tiles_s_executed": round(doc["tiles_run"] / doc["render_seconds"], 2),
        "in_worker_infer_tiles_s": round(doc["tiles_run"] / stages["infer"], 2) if stages.get("infer") else None,
        "raw_tiles_s": round(raw["tiles_s"], 2),
        "e2e_vs_raw": round(planned_s / raw["tiles_s"], 3),
        "stage_seconds": {k: round(stages.get(k, 0.0), 2) for k in E2E_STAGES},
        "stage_share_pct": {k: round(100 * stages.get(k, 0.0) / total_stage, 1) for k in E2E_STAGES},
        "peak_rss_gib": round(rss.peak / 2**30, 3),
        "peak_rss_render_gib": round(doc["peak_rss_render_gib"], 3),
        "peak_rss_pyramid_gib": round(doc["peak_rss_pyramid_gib"], 3),
        "cuda_max_mem_mib": round(doc["cuda_max_mem_mib"], 1) if "cuda_max_mem_mib" in doc else None,
        "raw_cuda_max_mem_mib": raw.get("cuda_max_mem_mib"),
    }
    print(
        f"e2e: {args.size}² ({mpx:.1f} Mpx), {doc['tiles']} tiles planned / {doc['tiles_run']} executed, "
        f"{doc['precision']}, batch {args.batch}\n"
        f"  render {out['render_seconds']} s ({out['render_mpx_s']} Mpx/s, {out['e2e_tiles_s_planned']} tiles/s), "
        f"pyramid {out['pyramid_seconds']} s ({doc['pyramid_tiles']} tiles, z{doc['pyramid_zooms'][0]}-"
        f"{doc['pyramid_zooms'][1]}), process {out['process_wall_seconds']} s\n"
        f"  e2e/raw = {out['e2e_tiles_s_planned']} / {out['raw_tiles_s']} = {out['e2e_vs_raw']}; "
        f"in-worker inference {out['in_worker_infer_tiles_s']} tiles/s\n"
        f"  peak RSS {out['peak_rss_gib']} GiB (render {out['peak_rss_render_gib']}, "
        f"pyramid {out['peak_rss_pyramid_gib']})",
        flush=True,
    )
    split = [{"stage": k, "s": stages.get(k, 0.0), "pct": out["stage_share_pct"][k]} for k in E2E_STAGES]
    print("  time split (read..write: summed worker-seconds; finalize, pyramid: wall):")
    print(
        "\n".join(
            "  " + ln
            for ln in table(split, [("stage", "stage", ""), ("s", "seconds", ".2f"), ("pct", "%", ".1f")]).split("\n")
        ),
        flush=True,
    )
    return out


# ---- c. reference pix2pix loop (child process) -----------------------------------------------
def child_baseline(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    import rasterio  # noqa: F401  (the imports the reference loop pays, timed apart)
    import torch  # noqa: F401

    import geopix.models.generator  # noqa: F401

    t_imports = time.perf_counter() - t_start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = reference_loop(Path(args.src), out / "map.tif", args.model, args.device)
    Path(args.result).write_text(json.dumps(doc | {"imports_seconds": t_imports}))


def bench_baseline(args: argparse.Namespace, model: str, src: Path, tmp: Path) -> dict:
    doc, wall, rss = _child("_baseline", args, model, src, tmp)
    mpx = doc["width"] * doc["height"] / 1e6
    out = {
        "benchmark": "baseline",
        "style": "pix2pix reference: 256² tiles one at a time, batch 1, no overlap/blending, fp32, NCHW",
        "model": Path(model).name,
        "raster": args.size,
        "map_mpx": round(mpx, 2),
        "tiles": doc["tiles"],
        "seconds": round(doc["seconds"], 2),
        "process_wall_seconds": round(wall, 2),
        "mpx_s": round(mpx / doc["seconds"], 3),
        "process_mpx_s": round(mpx / wall, 3),
        "tiles_s": round(doc["tiles"] / doc["seconds"], 2),
        "torch_threads": doc["torch_threads"],
        "peak_rss_gib": round(rss.peak / 2**30, 3),
        "cuda_max_mem_mib": round(doc["cuda_max_mem_mib"], 1) if "cuda_max_mem_mib" in doc else None,
    }
    print(
        f"baseline: {args.size}² ({mpx:.1f} Mpx), {doc['tiles']} tiles, {out['seconds']} s "
        f"({out['mpx_s']} Mpx/s, {out['tiles_s']} tiles/s, {doc['torch_threads']} torch threads); "
        f"process {out['process_wall_seconds']} s ({out['process_mpx_s']} Mpx/s); peak RSS {out['peak_rss_gib']} GiB",
        flush=True,
    )
    return out


def ratios(e2e: dict, base: dict) -> dict:
    """Useful map output per second, geopix vs the reference loop (both exclude interpreter start)."""
    r = {
        "geopix_render_vs_baseline": round(e2e["render_mpx_s"] / base["mpx_s"], 3),
        "geopix_render_plus_pyramid_vs_baseline": round(e2e["render_plus_pyramid_mpx_s"] / base["mpx_s"], 3),
    }
    print(
        f"useful output ratio geopix_e2e_Mpx_s / baseline_Mpx_s = {e2e['render_mpx_s']} / {base['mpx_s']} = "
        f"{r['geopix_render_vs_baseline']} (render only; with the pyramid too: "
        f"{r['geopix_render_plus_pyramid_vs_baseline']})",
        flush=True,
    )
    return r


# ---- e. the e2e/raw ratio, interleaved ------------------------------------------------------
def bench_ratio(args: argparse.Namespace, model: str, src: Path, tmp: Path) -> dict:
    args = copy.copy(args)
    args.no_pyramid = True
    rounds = []
    for k in range(args.rounds):
        before = raw_at(args, model)["tiles_s"]
        doc, _, _ = _child("_e2e", args, model, src, tmp)
        after = raw_at(args, model)["tiles_s"]
        e2e = doc["tiles"] / doc["render_seconds"]
        rounds.append({"raw_before": before, "e2e": e2e, "raw_after": after, "ratio": e2e / ((before + after) / 2),
                       "render_seconds": doc["render_seconds"], "stage_seconds": doc["stage_seconds"]})  # fmt: skip
        r = rounds[-1]
        print(f"round {k + 1}: raw {before:.1f}, e2e {e2e:.2f} tiles/s ({doc['render_seconds']:.1f} s), "
              f"raw {after:.1f} -> ratio {r['ratio']:.3f}", flush=True)  # fmt: skip
    r = spread([r["ratio"] for r in rounds])
    print(f"e2e/raw over {r['rounds']} rounds: median {r['median']:.3f}, min {r['min']:.3f}, max {r['max']:.3f}")
    return {
        "benchmark": "ratio",
        "raster": args.size,
        "chunk": args.chunk,
        "rounds": rounds,
        "median_ratio": r["median"],
    }


# ---- driver ----------------------------------------------------------------------------------
def _mosaic(args: argparse.Namespace, tmp: Path) -> Path:
    t0 = time.perf_counter()
    src = mosaic(Path(args.scene), tmp / f"mosaic_{args.size}.tif", args.size)
    print(f"mosaic {args.size}² of {Path(args.scene).name} written in {time.perf_counter() - t0:.1f} s", flush=True)
    return src


def summary(out: dict) -> None:
    rows = []
    raw = out.get("raw")
    if raw and raw.get("best_eager"):
        b = raw["best_eager"]
        rows.append({"what": "raw best eager", "value": f"{b['tiles_s']:.2f} tiles/s",
                     "detail": f"{b['precision']}, ch_last {b['channels_last']}, batch {b['batch']}, "
                               f"{b['gflop_s']:.1f} GFLOP/s"})  # fmt: skip
        c = raw.get("compiled")
        if c:
            val = f"{c['tiles_s']:.2f} tiles/s" if "tiles_s" in c else "failed"
            rows.append({"what": "raw torch.compile", "value": val, "detail": c.get("note", "")})
    e = out.get("e2e")
    if e:
        rows.append({"what": "e2e render", "value": f"{e['render_mpx_s']} Mpx/s",
                     "detail": f"{e['render_seconds']} s, {e['e2e_tiles_s_planned']} tiles/s planned, "
                               f"{e['precision']}, batch {e['batch']}"})  # fmt: skip
        rows.append({"what": "e2e/raw", "value": f"{e['e2e_vs_raw']}",
                     "detail": f"{e['e2e_tiles_s_planned']} / {e['raw_tiles_s']} tiles/s"})  # fmt: skip
        rows.append({"what": "pyramid", "value": f"{e['pyramid_seconds']} s", "detail": f"{e['pyramid_tiles']} tiles"})
        top = sorted(e["stage_share_pct"].items(), key=lambda kv: -kv[1])[:4]
        rows.append({"what": "e2e split", "value": "", "detail": ", ".join(f"{k} {v}%" for k, v in top)})
    b = out.get("baseline")
    if b:
        rows.append({"what": "baseline", "value": f"{b['mpx_s']} Mpx/s", "detail": f"{b['seconds']} s, batch 1 fp32"})
    if out.get("ratios"):
        rows.append({"what": "geopix/baseline", "value": f"{out['ratios']['geopix_render_vs_baseline']}",
                     "detail": "useful map Mpx/s, render only"})  # fmt: skip
    if e:
        rows.append({"what": "peak RSS e2e", "value": f"{e['peak_rss_gib']} GiB",
                     "detail": f"render {e['peak_rss_render_gib']}, pyramid {e['peak_rss_pyramid_gib']}"})  # fmt: skip
        if e.get("cuda_max_mem_mib") is not None:
            rows.append({"what": "cuda max e2e", "value": f"{e['cuda_max_mem_mib']} MiB", "detail": ""})
    if b:
        rows.append({"what": "peak RSS baseline", "value": f"{b['peak_rss_gib']} GiB", "detail": ""})
        if b.get("cuda_max_mem_mib") is not None:
            rows.append({"what": "cuda max baseline", "value": f"{b['cuda_max_mem_mib']} MiB", "detail": ""})
    print("\nsummary")
    print(table(rows, [("what", "what", ""), ("value", "value", ""), ("detail", "detail", "")]))


def build_parser() -> argparse.ArgumentParser:
    from geopix.config import TileConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["raw", "e2e", "baseline", "all", "ratio", "_e2e", "_baseline"])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--model", default="", help="a checkpoint (default: the shipped sat2map model)")
    ap.add_argument("--ngf", type=int, default=0, help="use a random unet_256 of this width (64: the paper's)")
    ap.add_argument("--threads", type=int, default=0, help="raw: torch threads (0: torch's default)")
    ap.add_argument("--seconds", type=float, default=5.0, help="timed seconds per raw measurement")
    ap.add_argument("--batches", default="1,2,4,8,16", help="raw: batch-size sweep")
    ap.add_argument("--precisions", default="fp32,bf16,fp16", help="raw: precisions to sweep")
    ap.add_argument("--force-fp16", action="store_true", help="raw: run fp16 on CPU too")
    ap.add_argument("--channels-last", choices=["both", "on", "off"], default="both", help="raw: layouts")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="raw: skip torch.compile")
    ap.add_argument("--compile-mode", default="default", help="raw: torch.compile mode (default, max-autotune, ...)")
    ap.add_argument("--scene", default=str(VIENNA), help="e2e/baseline: the aerial GeoTIFF the mosaic is built from")
    ap.add_argument("--size", type=int, default=8192, help="e2e/baseline: mosaic side in pixels")
    ap.add_argument("--tile-size", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=TileConfig().overlap, help="e2e: window overlap")
    ap.add_argument("--batch", type=int, default=8, help="e2e: batch size")
    ap.add_argument("--chunk", type=int, default=2048, help="e2e: output block side")
    ap.add_argument("--precision", default="auto", help="e2e: auto | fp32 | bf16 | fp16")
    ap.add_argument("--workers", type=int, default=0, help="e2e: local worker processes (0: the default)")
    ap.add_argument("--rounds", type=int, default=3, help="ratio: raw / render / raw rounds")
    ap.add_argument("--no-pyramid", action="store_true", help="e2e: render only, no XYZ pyramid")
    ap.add_argument("--json", default="", help="also write the results here")
    # internal: the child processes
    ap.add_argument("--src", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    ap.add_argument("--result", default="", help=argparse.SUPPRESS)
    return ap


def main() -> None:
    args = build_parser().parse_args()
    if args.which == "_e2e":
        return child_e2e(args)
    if args.which == "_baseline":
        return child_baseline(args)
    from geopix.errors import DeviceError
    from geopix.infer import resolve_device

    try:
        resolve_device(args.device)
    except DeviceError as exc:
        raise SystemExit(f"bench_perf.py: {exc}") from None
    if args.which != "raw" and not Path(args.scene).exists():
        print(f"skipped: {args.scene} is absent; pass --scene AERIAL.tif (e2e/baseline/all mosaic it)", flush=True)
        return None
    out: dict = {
        "machine": machine(),
        "args": {k: v for k, v in vars(args).items() if k not in ("src", "out", "result")},
    }
    with tempfile.TemporaryDirectory(prefix="bench_perf_") as tmp:
        tmp = Path(tmp)
        model = resolve_model_path(args, tmp)
        if args.which in ("raw", "all"):
            out["raw"] = bench_raw(args, model)
        if args.which in ("e2e", "baseline", "all", "ratio"):
            src = _mosaic(args, tmp)
            if args.which == "ratio":
                out["ratio"] = bench_ratio(args, model, src, tmp)
            if args.which in ("e2e", "all"):
                out["e2e"] = bench_e2e(args, model, src, tmp)
            if args.which in ("baseline", "all"):
                out["baseline"] = bench_baseline(args, model, src, tmp)
            if "e2e" in out and "baseline" in out:
                out["ratios"] = ratios(out["e2e"], out["baseline"])
        if args.which == "all":
            summary(out)
    write_json(args.json, out)
    return None


if __name__ == "__main__":
    main()
