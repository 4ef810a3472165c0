"""The leave-one-place-out table of the model card, from ``geopix eval`` reports of labelled places.

    python benchmarks/places_table.py runs/places [--variants generator avg50 avg25]

Reads ``ROOT/eval-shipped/report.json`` (the shipped model on every place; a place may have its
own ``ROOT/eval-shipped-PLACE/report.json``) and, per held-out place P,
``ROOT/runs/without-P/eval-VARIANT/report.json``; prints a markdown table of IoU (precision /
recall) per place and class, the means over places, and the largest drop of any place against
the shipped model.  Nothing asserts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

GROUPS = ("building", "road", "water")


def load(path: Path) -> dict:
    return json.loads(path.read_text())["places"] if path.is_file() else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--variants", nargs="+", default=["generator", "avg50", "avg25"])
    args = ap.parse_args()
    root = args.root
    shipped = load(root / "eval-shipped" / "report.json")
    for extra in sorted(root.glob("eval-shipped-*/report.json")):
        shipped.update(load(extra))
    rows, means = [], {v: {g: [] for g in GROUPS} for v in ["shipped", *args.variants]}
    drops = {v: [] for v in args.variants}
    for place in sorted(shipped):
        held = {
            v: load(root / "runs" / f"without-{place}" / f"eval-{v}" / "report.json").get(place, {})
            for v in args.variants
        }
        for g in GROUPS:
            if g not in shipped[place]:
                continue
            cells = []
            for name, scores in [("shipped", shipped[place]), *held.items()]:
                s = scores.get(g)
                if s is None:
                    cells.append("–")
                    continue
                cells.append(f"{s['iou']:.3f} ({s['precision']:.2f} / {s['recall']:.2f})")
                means[name][g].append(s["iou"])
                if name != "shipped":
                    drops[name].append((shipped[place][g]["iou"] - s["iou"], f"{place} {g}"))
            rows.append(f"| {place} | {g} | " + " | ".join(cells) + " |")
    print("| held-out place | class | shipped sat2map | " + " | ".join(args.variants) + " |")
    print("|---|---|---|" + "---|" * len(args.variants))
    print("\n".join(rows))
    for g in GROUPS:
        vals = [means[n][g] for n in ["shipped", *args.variants]]
        print(
            f"| **mean** | {g} | " + " | ".join(f"{sum(v) / len(v):.4f} ({len(v)})" if v else "–" for v in vals) + " |"
        )
    for v in args.variants:
        if drops[v]:
            worst = max(drops[v])
            print(f"{v}: largest drop against shipped {worst[0]:+.3f} ({worst[1]})")


if __name__ == "__main__":
    main()
