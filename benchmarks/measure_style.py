"""Measure the map style on the maps dataset: each class's share of pixels and each road class's drawn width.

Every pixel of 100 training maps (0.90 m/px) is classified to the nearest style colour
(``geopix.style``); a road pixel's width is the shorter of the horizontal and vertical runs of
its class through it, and a map's width is the median over its pixels (maps with < 200 pixels
of a class are skipped).  The style's ``width_m`` values come from this.

    python benchmarks/measure_style.py [../shared/data/maps]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from geopix import style

RES_M = 0.9  # the maps' ground resolution (benchmarks/measure_ground_resolution.py)


def run_lengths(mask: np.ndarray) -> np.ndarray:
    """Length of the horizontal run of True each pixel belongs to (0 elsewhere)."""
    out = np.zeros(mask.shape, np.int32)
    for r, row in enumerate(mask):
        d = np.diff(np.r_[0, row.astype(np.int8), 0])
        for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True):
            out[r, a:b] = b - a
    return out


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/maps")
    files = sorted((root / "train").glob("*.jpg"))[::11][:100]
    counts = np.zeros(len(style.CLASSES))
    widths: dict[str, list[float]] = {n: [] for n in style.ROAD_CLASSES}
    for f in files:
        b = np.asarray(Image.open(f).convert("RGB"))
        b = b[:, b.shape[1] // 2 :]
        cls = style.classify(b)
        counts += np.bincount(cls.ravel(), minlength=len(style.CLASSES))
        for name in style.ROAD_CLASSES:
            m = cls == style.CLASS_NAMES.index(name)
            if m.sum() >= 200:
                w = np.minimum(run_lengths(m), run_lengths(m.T).T)[m]
                widths[name].append(float(np.median(w)))
    print(f"{len(files)} maps from {root / 'train'}")
    for c, n in zip(style.CLASSES, counts, strict=True):
        print(f"  {c.name:12s} {100 * n / counts.sum():5.1f} % of pixels")
    for name, ws in widths.items():
        if ws:
            q1, med, q3 = np.percentile(ws, [25, 50, 75])
            print(f"  {name:12s} width {med:.0f} px (IQR {q1:.0f}-{q3:.0f}) = {med * RES_M:.1f} m over {len(ws)} maps")


if __name__ == "__main__":
    main()
