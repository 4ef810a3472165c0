"""The int8 quality gate on the developers' data: maps val accuracy, palette class agreement, real-set IoU.

The gate any precision must pass before ``--precision auto`` may pick it (issue 27): maps val
accuracy at δ5 and δ10 within 0.5 points of fp32, palette class agreement ≥ 99 % on maps val tiles,
and the real sets' IoU within 0.01 of fp32.  Prints each figure for fp32 and the precisions asked.

    python benchmarks/bench_int8_gate.py [--model sat2map] [--precisions int8,bf16] [--limit 200]
                                         [--data ../shared/data] [--json out.json] [--exact-isa vnni]

``--exact-isa vnni`` (or ``amx``) measures the int8 model of that class as those CPUs compute it
(``runtime.exact_int8``: exact int8 sums), on any CPU: how the shipped VNNI/AMX model was checked.
``--fallback`` measures the model a machine without the developers' data makes for a checkpoint
geopix ships no int8 model of (calibrated on the demo raster and synthetic scenes; built in a
temporary cache).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
#: Real sets with labels of one class each (building footprints), paths under DATA/real.
REAL_SETS = {
    "zanzibar": (["zanzibar_oam/aerial_1.tif", "zanzibar_oam/aerial_2.tif"], ["zanzibar_oam/buildings.geojson"]),
    "nairobi": (["nairobi_oam/aerial_1.tif", "nairobi_oam/aerial_2.tif"], ["nairobi_oam/buildings.geojson"]),
    "massachusetts": (
        ["massachusetts_buildings/22978945_15.tif", "massachusetts_buildings/23429155_15.tif"],
        ["massachusetts_buildings/22978945_15_buildings.gpkg", "massachusetts_buildings/23429155_15_buildings.gpkg"],
    ),
}


def class_agreement_on_val(model: str, data: Path, precisions: list[str], n: int) -> dict[str, float]:
    from geopix.infer import Predictor
    from geopix.models.quantize import _maps_tiles
    from geopix.models.registry import load_model
    from geopix.style import classify

    loaded = load_model(model)
    tiles = np.stack(_maps_tiles(data / "maps" / "val", loaded.spec, n))
    classes = {}
    for p in ["fp32", *precisions]:
        pred = Predictor.from_loaded(loaded, "cpu", precision=p)
        rgb = np.concatenate([pred.predict(tiles[i : i + 8]) for i in range(0, len(tiles), 8)])
        classes[p] = classify(rgb.transpose(0, 2, 3, 1))
    return {p: float((classes[p] == classes["fp32"]).mean()) for p in precisions}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sat2map")
    ap.add_argument("--precisions", default="int8")
    ap.add_argument("--limit", type=int, default=200, help="maps val pairs scored")
    ap.add_argument("--agreement-tiles", type=int, default=64)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="")
    ap.add_argument("--exact-isa", default="", help="int8 as CPUs of this exact class compute it (vnni, amx)")
    ap.add_argument("--fallback", action="store_true", help="the int8 model made without the developers' data")
    args = ap.parse_args()
    from geopix.models import quantize
    from geopix.runtime import exact_int8

    with contextlib.ExitStack() as stack:
        if args.exact_isa:
            stack.enter_context(exact_int8(args.exact_isa))
        if args.fallback:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            os.environ["GEOPIX_CALIBRATION_DATA"] = str(Path(tmp) / "absent")
            os.environ["GEOPIX_CACHE_DIR"] = tmp
            quantize.SHIPPED_DIR = Path(tmp) / "no-shipped-models"
        gate(args)


def gate(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if not (args.data / "maps" / "val").is_dir():
        raise SystemExit(f"{args.data}/maps/val is absent: pass --data DIR (the shared data folder)")
    from geopix.evaluate import evaluate
    from geopix.fidelity import evaluate_sets, load_sets

    precisions = args.precisions.split(",")
    report: dict = {"model": args.model, "maps_val": {}, "real": {}, "gate": {}}
    for p in ["fp32", *precisions]:
        r = evaluate(model=args.model, data=args.data / "maps", split="val", limit=args.limit, device="cpu",
                     precision=p)  # fmt: skip
        report["maps_val"][p] = {k: r.metrics[k] for k in ("acc_5", "acc_10") if k in r.metrics} or r.metrics
        print(f"maps val ({r.n_images} pairs), {p}: " + ", ".join(f"{k} {v:.4f}" for k, v in r.metrics.items()))
    agree = class_agreement_on_val(args.model, args.data, precisions, args.agreement_tiles)
    real = args.data / "real"
    with tempfile.TemporaryDirectory() as tmp:
        sets_json = Path(tmp) / "sets.json"
        sets_json.write_text(json.dumps({"sets": [
            {"name": name, "rasters": [str(real / r) for r in rasters],
             "layers": [f"{real / v}=building" for v in layers]}
            for name, (rasters, layers) in REAL_SETS.items()
        ]}))  # fmt: skip
        for p in ["fp32", *precisions]:
            r = evaluate_sets(model=args.model, sets=load_sets(sets_json), out_dir=Path(tmp) / p, device="cpu",
                              precision=p)  # fmt: skip
            report["real"][p] = {s: v["building"]["iou"] for s, v in r.sets.items() if "building" in v}
            print(f"real sets, {p}: building IoU " + ", ".join(f"{s} {v:.4f}" for s, v in report["real"][p].items()))
    for p in precisions:
        mv, ref = report["maps_val"][p], report["maps_val"]["fp32"]
        d5 = 100 * (mv["acc_5"] - ref["acc_5"]) if "acc_5" in mv else math.nan
        d10 = 100 * (mv["acc_10"] - ref["acc_10"]) if "acc_10" in mv else math.nan
        diou = max(abs(report["real"][p][s] - report["real"]["fp32"][s]) for s in report["real"]["fp32"])
        ok = abs(d5) <= 0.5 and abs(d10) <= 0.5 and agree[p] >= 0.99 and diou <= 0.01
        report["gate"][p] = {"delta5_points": d5, "delta10_points": d10, "class_agreement": agree[p],
                             "max_real_iou_change": diou, "passes": ok}  # fmt: skip
        print(
            f"gate {p}: δ5 {d5:+.2f} pts, δ10 {d10:+.2f} pts (≤ 0.5), class agreement {100 * agree[p]:.2f} % "
            f"(≥ 99) on {args.agreement_tiles} val tiles, real-set IoU change ≤ {diou:.4f} (≤ 0.01): "
            f"{'PASS' if ok else 'FAIL'}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
