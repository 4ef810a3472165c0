"""Acceptance of issue 27: a whole-process render, default settings and --precision int8, against the
reference pix2pix loop measured in the same run.

Each run is a fresh interpreter on the same ``--size``² mosaic (``bench_perf``'s ``_e2e`` and
``_baseline`` children; no XYZ pyramid): the reference loop (256² tiles one at a time, batch 1,
fp32), then geopix with ``--precision auto`` and with each of ``--precisions``.  Printed: each
one's render seconds and whole-process wall seconds, its ratio to the reference loop (useful map
pixels per second, whole process), and geopix's stage split (read, infer, blend, write: summed
worker-seconds; finalize: wall).  On a shared machine compare ratios within one run only.

    python benchmarks/bench_int8_render.py [--size 8192] [--precisions int8,fp32] [--scene AERIAL.tif]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench_perf import _child, _mosaic, build_parser
from bench_render import default_model

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
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = _mosaic(args, Path(tmp))
        base, base_wall, _ = _child("_baseline", args, model, src, Path(tmp))
        mpx = base["width"] * base["height"] / 1e6
        rows.append({"run": "reference loop (batch 1, fp32)", "precision": "fp32", "seconds": base["seconds"],
                     "wall": base_wall, "stages": {}})  # fmt: skip
        print(f"reference loop: {base['seconds']:.1f} s ({base_wall:.1f} s whole process)", flush=True)
        for precision in ["auto", *(p for p in mine.precisions.split(",") if p)]:
            args.precision = precision
            doc, wall, _ = _child("_e2e", args, model, src, Path(tmp))
            rows.append({"run": f"geopix --precision {precision}", "precision": doc["precision"],
                         "seconds": doc["render_seconds"], "wall": wall, "stages": doc["stage_seconds"]})  # fmt: skip
            print(f"geopix {precision} → {doc['precision']}: {doc['render_seconds']:.1f} s ({wall:.1f} s whole "
                  f"process)", flush=True)  # fmt: skip
    print(f"\n{mine.size}² ({mpx:.1f} Mpx) of {Path(args.scene).name}, model {Path(model).name}")
    print(f"{'run':34s} {'ran as':>7s} {'render s':>9s} {'process s':>10s} {'x ref (process)':>16s}  stages (s)")
    for r in rows:
        split = ", ".join(f"{k} {r['stages'].get(k, 0.0):.1f}" for k in STAGES) if r["stages"] else ""
        print(f"{r['run']:34s} {r['precision']:>7s} {r['seconds']:9.1f} {r['wall']:10.1f} "
              f"{base_wall / r['wall']:16.2f}  {split}")  # fmt: skip
    if mine.json:
        Path(mine.json).write_text(json.dumps({"size": mine.size, "mpx": mpx, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
