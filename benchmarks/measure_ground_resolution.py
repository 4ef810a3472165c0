"""Estimate the maps dataset's ground resolution from its street grid.

New York's street grids repeat every ~80 m (Manhattan: 20 streets per mile = 80.5 m between
street centre lines; most of Brooklyn and Queens is laid out on a similar 200-260 ft block plus
street). On each map (the B half) the white road mask's 2-D power spectrum has its strongest
peak at that spacing; the median period over many images, in pixels, gives metres per pixel.

    python benchmarks/measure_ground_resolution.py [--n 200] [--spacing 80.5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

MAPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "maps" / "train"


def street_period(map_rgb: np.ndarray, lo: float = 25, hi: float = 200) -> float | None:
    """Period (px) of the strongest regular pattern of white roads, or None when there is none."""
    road = (map_rgb.min(-1) >= 250).astype(np.float32)
    if road.mean() < 0.03:
        return None
    road -= road.mean()
    n = road.shape[0]
    win = np.hanning(n)[:, None] * np.hanning(n)[None, :]
    p = np.abs(np.fft.fftshift(np.fft.fft2(road * win))) ** 2
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    r = np.hypot(yy, xx)
    band = (r >= n / hi) & (r <= n / lo)
    if not band.any():
        return None
    k = np.argmax(np.where(band, p, 0))
    peak = p.flat[k]
    if peak < 8 * np.median(p[band]):  # no clear grid
        return None
    return float(n / r.flat[k])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--spacing", type=float, default=80.5, help="street spacing in metres")
    ap.add_argument("maps", nargs="?", type=Path, default=MAPS, help="the maps train folder (1200×600 A|B jpgs)")
    args = ap.parse_args()
    if not args.maps.exists():
        raise SystemExit(f"{args.maps} is absent: pass the maps dataset's train folder, e.g. data/maps/train")
    files = sorted(args.maps.glob("*.jpg"), key=lambda p: int(p.stem))
    step = max(1, len(files) // args.n)
    periods = []
    for f in files[::step][: args.n]:
        b = np.asarray(Image.open(f).convert("RGB"))[:, 600:]
        per = street_period(b)
        if per is not None:
            periods.append(per)
    per = np.array(periods)
    m_per_px = args.spacing / np.median(per)
    out = {
        "images": len(files[::step][: args.n]),
        "with_clear_grid": len(per),
        "median_period_px_at_600": round(float(np.median(per)), 1),
        "period_iqr_px": [round(float(v), 1) for v in np.percentile(per, [25, 75])],
        "m_per_px_at_600": round(float(m_per_px), 3),
        "m_per_px_at_286": round(float(m_per_px * 600 / 286), 3),
        "m_per_px_at_256": round(float(m_per_px * 600 / 256), 3),
        "assumed_street_spacing_m": args.spacing,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
