"""The leave-one-place-out table of the model card, from ``geopix eval`` reports of labelled places.

    python benchmarks/places_table.py runs/places [--variants generator avg50 avg25]

Reads ``ROOT/eval-shipped/report.json`` (the shipped model on every place; a place may have its
own ``ROOT/eval-shipped-PLACE/report.json``) and, per held-out place P,
``ROOT/runs/without-P/eval-VARIANT/report.json``; prints a markdown table of IoU (precision /
recall) per place and class, the means over the places every column scores, and the largest drop
of any place against the shipped model.  Nothing asserts.
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
    rows, drops = [], {v: [] for v in args.variants}
    matched: dict[str, list[list[float]]] = {g: [] for g in GROUPS}  # places every column scores
    for place in sorted(shipped):
        held = {
            v: load(root / "runs" / f"without-{place}" / f"eval-{v}" / "report.json").get(place, {})
            for v in args.variants
        }
        for g in GROUPS:
            if g not in shipped[place]:
                continue
            columns = [shipped[place], *held.values()]
            cells = [
                f"{c[g]['iou']:.3f} ({c[g]['precision']:.2f} / {c[g]['recall']:.2f})" if g in c else "–"
                for c in columns
            ]
            if all(g in c for c in columns):
                matched[g].append([c[g]["iou"] for c in columns])
            for v, c in held.items():
                if g in c:
                    drops[v].append((shipped[place][g]["iou"] - c[g]["iou"], f"{place} {g}"))
            rows.append(f"| {place} | {g} | " + " | ".join(cells) + " |")
    print("| held-out place | class | shipped sat2map | " + " | ".join(args.variants) + " |")
    print("|---|---|---|" + "---|" * len(args.variants))
    print("\n".join(rows))
    for g in GROUPS:
        if matched[g]:
            means = [sum(col) / len(col) for col in zip(*matched[g], strict=True)]
            print(f"| **mean** ({len(matched[g])} places) | {g} | " + " | ".join(f"**{m:.4f}**" for m in means) + " |")
    for v in args.variants:
        if drops[v]:
            worst = max(drops[v])
            print(f"{v}: largest drop against shipped {worst[0]:+.3f} ({worst[1]})")


if __name__ == "__main__":
    main()
