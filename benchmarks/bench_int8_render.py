"""Acceptance of issue 27: a whole-process render, default settings and --precision int8, against the
reference pix2pix loop measured in the same run.

Each run is a fresh process on the same ``--size``² mosaic, labelled at the model's ground
resolution so that the default render neither resamples nor shrinks it: the reference loop
(``bench_perf``'s ``_baseline`` child: 256² tiles one at a time, batch 1, fp32), then the command
a user runs, ``geopix render MOSAIC -o OUT --no-progress`` with every other setting at its default,
and the same with each of ``--precisions``.  Printed: each one's render seconds (render.json) and
whole-process wall seconds, its ratio to the reference loop (useful map pixels per second, whole
process), and geopix's stage split (read, infer, blend, write: summed worker-seconds; finalize:
wall).  Then the int8 network and decoding alone on the render's tiles, as its worker calls
them, and the ratio a render would reach if everything else were free.  On a shared machine
compare ratios within one run only.

    python benchmarks/bench_int8_render.py [--size 8192] [--precisions int8,fp32] [--scene AERIAL.tif]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_perf import _child, build_parser
from bench_render import default_model
from harness import mosaic

STAGES = ("load", "read", "infer", "blend", "write", "finalize")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--precisions", default="int8")
    ap.add_argument("--scene", default="")
    ap.add_argument("--json", default="")
    mine = ap.parse_args()
    args = build_parser().parse_args(["e2e", "--size", str(mine.size), "--no-pyramid", "--device", "cpu"])
    if mine.scene:
        args.scene = mine.scene
    if not Path(args.scene).exists():
        raise SystemExit(f"{args.scene} is absent: pass --scene AERIAL.tif")
    model = default_model()
    build_int8(model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = mosaic(Path(args.scene), Path(tmp) / f"mosaic_{mine.size}.tif", mine.size, model_resolution(model))
        base, base_wall, _ = _child("_baseline", args, model, src, Path(tmp))
        mpx = base["width"] * base["height"] / 1e6
        rows.append({"run": "reference loop (batch 1, fp32)", "precision": "fp32", "seconds": base["seconds"],
                     "wall": base_wall, "stages": {}})  # fmt: skip
        print(f"reference loop: {base['seconds']:.1f} s ({base_wall:.1f} s whole process)", flush=True)
        for precision in ["auto", *(p for p in mine.precisions.split(",") if p)]:
            doc, wall = cli_render(src, Path(tmp) / f"geopix_{precision}", model, precision)
            rows.append({"run": f"geopix --precision {precision}", "precision": doc["precision"],
                         "seconds": doc["seconds"], "wall": wall, "stages": doc["stage_seconds"]})  # fmt: skip
            print(f"geopix {precision} → {doc['precision']}: {doc['seconds']:.1f} s ({wall:.1f} s whole "
                  f"process)", flush=True)  # fmt: skip
        floor = inference_floor(src, model, doc["tiles_run"]) if doc["precision"] == "int8" else None
    print(f"\n{mine.size}² ({mpx:.1f} Mpx) of {Path(args.scene).name}, model {Path(model).name}")
    print(f"{'run':34s} {'ran as':>7s} {'render s':>9s} {'process s':>10s} {'x ref (process)':>16s}  stages (s)")
    for r in rows:
        split = ", ".join(f"{k} {r['stages'].get(k, 0.0):.1f}" for k in STAGES) if r["stages"] else ""
        print(f"{r['run']:34s} {r['precision']:>7s} {r['seconds']:9.1f} {r['wall']:10.1f} "
              f"{base_wall / r['wall']:16.2f}  {split}")  # fmt: skip
    if floor is not None:
        start = base_wall - base["seconds"]  # what any process pays before it computes: interpreter, imports
        print(f"\nthe int8 network and decoding alone on the render's {floor['tiles']} tiles, as its worker "
              f"calls them ({floor['threads']} task threads, {floor['per_call']} tiles per call, no I/O): "
              f"{floor['seconds']:.1f} s; with the reference's {start:.1f} s of start-up, a render with free "
              f"reading, blending, writing and finalize would be {base_wall / (floor['seconds'] + start):.2f}× "
              "the reference here")  # fmt: skip
    if mine.json:
        doc = {"size": mine.size, "mpx": mpx, "runs": rows, "inference_floor": floor}
        Path(mine.json).write_text(json.dumps(doc, indent=1))


def inference_floor(src: Path, model: str, tiles: int) -> dict:
    """Wall seconds of the int8 network plus the decoding alone on ``tiles`` real tiles of ``src``
    (the render's ``TileGrid``), called as the default in-process worker calls them: a task
    thread per core sharing one model, each call ``tiles_per_call`` tiles."""
    import os
    import threading

    import numpy as np
    import rasterio
    import torch

    from geopix.config import InferConfig, TileConfig
    from geopix.infer import Predictor
    from geopix.models.checkpoint import load_checkpoint
    from geopix.plan import TileGrid, Window

    threads, t = os.cpu_count() or 1, TileConfig()
    torch.set_num_threads(1)
    pred = Predictor.from_loaded(load_checkpoint(model), "cpu", precision="int8", callers=threads)
    per_call = pred.tiles_per_call(InferConfig().batch_size)
    with rasterio.open(src) as s:
        img = s.read([1, 2, 3])
    grid = TileGrid(img.shape[1], img.shape[2], t.tile_size, t.overlap)  # the render's tiles
    padded = np.pad(img, ((0, 0), (t.tile_size,) * 2, (t.tile_size,) * 2), mode="reflect")  # its edges reflect
    origin = Window(-t.tile_size, -t.tile_size, *padded.shape[1:])
    cut = list(grid)
    cut = (cut * (tiles // len(cut) + 1))[:tiles]
    calls = [np.stack([padded[(slice(None), *grid.window(*ij).relative_to(origin))] for ij in cut[i : i + per_call]])
             .astype(np.float32) / 127.5 - 1.0 for i in range(0, len(cut), per_call)]  # fmt: skip
    del img, padded
    pred.predict(calls[0])

    def run(mine: list[np.ndarray]) -> None:
        for x in mine:
            pred.predict(x)

    workers = [threading.Thread(target=run, args=(calls[i::threads],)) for i in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {"seconds": time.perf_counter() - t0, "tiles": len(cut), "threads": threads, "per_call": per_call}


def model_resolution(model: str) -> float:
    from geopix.models.checkpoint import load_checkpoint

    return load_checkpoint(model).spec.ground_resolution_m


def build_int8(model: str) -> None:
    """The model's int8 model built now if it is not cached, so no timed run builds it."""
    from geopix.infer import int8_capable
    from geopix.models.checkpoint import load_checkpoint
    from geopix.models.quantize import int8_model

    if int8_capable("cpu"):
        loaded = load_checkpoint(model)
        int8_model(model, loaded.spec, loaded.net)


def cli_render(src: Path, out: Path, model: str, precision: str) -> tuple[dict, float]:
    """``geopix render`` as a user runs it (CPU: ``--device cpu`` only where a GPU would be auto's
    choice); its render.json and the whole process's wall seconds."""
    import torch

    cmd = [sys.executable, "-m", "geopix", "render", str(src), "-o", str(out), "--model", model, "--no-progress"]
    if precision != "auto":
        cmd += ["--precision", precision]
    if torch.cuda.is_available():
        cmd += ["--device", "cpu"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads((out / "render.json").read_text()), wall


if __name__ == "__main__":
    main()
