"""Choose the default overlap by measurement: seams per overlap, and useful output vs the baseline.

Prints tables and writes JSON; nothing asserts (the default is chosen by people reading these).

    python benchmarks/bench_overlap.py sweep [--overlaps 0,8,16,24,32,48,64] [--grids model,source]
        [--data ../shared/data] [--keep /tmp/geopix_overlap_sweep] [--crops docs/img/overlap_worst_borders.jpg]
        [--crop-overlaps 0,16,24,32,64] [--json sweep.json]
    python benchmarks/bench_overlap.py throughput [--overlaps 32,64] [--size 8192] [--rounds 3] [--json tp.json]
    python benchmarks/bench_overlap.py ceiling [--overlaps 0,16,32,64] [--size 8192] [--seconds 10]

* **sweep** renders every raster of ``DATA/geotiffs/*.tif`` and ``DATA/real/*/*.tif`` (byte-identical
  files once) with the shipped model at each overlap, on two grids: ``model`` (the default
  resampling to the model's ground resolution, written with ``--output-resolution model`` so the
  map *is* the work grid and tile borders sit at known pixels) and ``source`` (``--no-resample``:
  the model on the source pixels, 18× more tiles, so more borders to measure).  Maps are kept
  under ``--keep`` and reused, so the scores can be recomputed without rendering again.
  Per grid and overlap, pooled over the rasters:

  - **seam score**: ``bench_render.seam_score`` (mean jump on tile-window edges ÷ mean elsewhere);
  - **p99 ratio**: the 99th percentile of the jump across tile borders ÷ the 99th percentile of
    the jump inside tiles.  The jump across the line before column ``c`` is
    ``Σ_band |x[band, r, c] − x[band, r, c−1]|`` (rows likewise).  Border lines of the hand-over
    between tiles ``k−1`` and ``k``: the edge of ``k``'s window, the core boundary (where the
    weights cross) and the edge of ``k−1``'s window (one line at overlap 0); inside lines lie
    outside every overlap band.  5–95 % bootstrap interval over border segments (one segment:
    one hand-over along one tile's core);
  - **band p99 ratio**: the same with the jump taken across the whole hand-over band (from the
    last pixel only tile ``k−1`` covers to the first only ``k`` covers, ``overlap + 1`` apart)
    against pixel pairs as far apart inside tiles.  Blending spreads a disagreement between
    tiles over the band, which lowers the one-pixel jump; this catches such soft seams;
  - **worst borders**: segments ranked by excess band jump (the segment's mean band jump minus
    the mean jump of pixel pairs as far apart within 12 px either side of its band: how much
    more the map changes across this hand-over than next to it); crops of the worst ones, one
    column per ``--crop-overlaps``, saved side by side as a JPEG.

* **throughput**: useful output (map Mpx/s of an end-to-end render, no pyramid) on a ``--size``²
  Vienna mosaic rendered with ``--no-resample`` (``bench_perf.py e2e``), against the reference
  loop (``bench_perf.py baseline``: batch 1, fp32, no overlap, compute only) on the same mosaic,
  each in a fresh process.  Rounds of baseline / render per overlap (order alternating) /
  baseline; each render's ratio uses the mean of the baselines around it; the median is printed.

* **ceiling**: the most useful output could reach over the baseline if reading, blending,
  writing and finalizing took no time: the generator's seconds per tile in the baseline's
  configuration (batch 1, fp32, contiguous) and in the render's (batch 8, channels_last,
  ``--precision auto``), both timed here with ``bench_perf.time_predict``, times the tiles each
  computes for a ``--size``² render (``geopix.plan.TileGrid``).  When the ceiling is below a goal,
  no change to the pipeline around the generator reaches it on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bench_perf import _child
from bench_perf import build_parser as perf_parser
from bench_render import render_once, seam_sums, window_edges
from harness import ROOT, VIENNA, default_model, machine, mosaic, spread, table, write_json

DATA = ROOT.parent / "shared" / "data"
TILE = 256
CROP = 96  # work pixels around a border segment's midpoint
NEAR = 12  # lines either side of a band that make a segment's local reference


# ---- rasters and renders ---------------------------------------------------------------------
def rasters(data: Path) -> list[Path]:
    """The shared GeoTIFFs and the real sets' rasters, each distinct file once (las_vegas_roads
    ships a copy of the Vegas GeoTIFF)."""
    seen, out = set(), []
    for p in sorted(data.glob("geotiffs/*.tif")) + sorted(data.glob("real/*/*.tif")):
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            out.append(p)
    return out


def label(p: Path, data: Path) -> str:
    return str(p.relative_to(data).with_suffix(""))


def render_map(src: Path, out: Path, model: str, grid: str, overlap: int) -> Path:
    """``out/map.tif`` on the work grid (rendered unless it is there from an earlier sweep)."""
    if (out / "map.tif").exists() and (out / "render.json").exists():
        return out / "map.tif"
    resample = {"model": {"resample": True, "output_resolution": "model"}, "source": {"resample": False}}[grid]
    render_once(src, out, model, overlap=overlap, chunk_size=2048, **resample)
    manifest = json.loads((out / "render.json").read_text())
    import rasterio

    with rasterio.open(out / "map.tif") as ds:
        if [ds.height, ds.width] != manifest["work_grid"]:
            raise SystemExit(f"{out}: map {ds.height}×{ds.width} is not the work grid {manifest['work_grid']}")
    return out / "map.tif"


# ---- border geometry -------------------------------------------------------------------------
@dataclass(frozen=True)
class HandOver:
    """Where tile ``k−1`` hands over to tile ``k`` along one axis (line ``c``: between ``c−1`` and ``c``)."""

    lines: tuple[int, ...]  # window edge of k, core boundary, window edge of k−1 (one line at overlap 0)
    band: tuple[int, int]  # every line in [first, last] has both tiles' weight
    centre: int


def hand_overs(length: int, overlap: int) -> list[HandOver]:
    from geopix.plan import TileGrid

    g = TileGrid(length, 1, TILE, overlap)
    out = []
    for k in range(1, g.rows):
        first, centre, last = g.window(k, 0).row, k * g.stride, g.window(k - 1, 0).row_stop
        lines = tuple(sorted({c for c in (first, centre, last) if 0 < c < length}))
        if lines:
            out.append(HandOver(lines, (first, last), centre))
    return out


def jumps(img: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jump across each column line (``(H, W−1)``, index ``c−1`` for line ``c``) and row line, NaN where
    either pixel is masked; summed over bands."""
    x = img.astype(np.float32)
    gx = np.abs(np.diff(x, axis=2)).sum(0)
    gy = np.abs(np.diff(x, axis=1)).sum(0)
    gx[~(valid[:, 1:] & valid[:, :-1])] = np.nan
    gy[~(valid[1:, :] & valid[:-1, :])] = np.nan
    return gx, gy


@dataclass
class Segment:
    """One hand-over along one tile core: its border jumps and how much it stands out locally."""

    where: str
    axis: str  # "x": a vertical border (jump across columns), "y": horizontal
    centre: tuple[int, int]  # (row, col) of the midpoint on the core boundary
    jumps: np.ndarray
    band: np.ndarray  # the jump across the whole band (NaN where the band meets the raster edge)
    excess: float


@dataclass
class Pool:
    """Everything measured for one (grid, overlap), pooled over rasters."""

    border: list[np.ndarray] = field(default_factory=list)
    inside: list[np.ndarray] = field(default_factory=list)
    band_border: list[np.ndarray] = field(default_factory=list)
    band_inside: list[np.ndarray] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    seam: list[float] = field(default_factory=lambda: [0.0, 0, 0.0, 0])  # seam_sums, summed
    per_raster: dict[str, dict] = field(default_factory=dict)


def measure(img: np.ndarray, valid: np.ndarray, overlap: int, where: str, pool: Pool) -> None:
    """Add one map's border and inside jumps, its segments and its seam sums to ``pool``."""
    from geopix.plan import TileGrid

    warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
    warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
    h, w = valid.shape
    grid = TileGrid(h, w, TILE, overlap)
    rows, cols = window_edges(grid)
    sums = seam_sums(img, valid, rows, cols)
    pool.seam = [a + b for a, b in zip(pool.seam, sums, strict=True)]
    gx, gy = jumps(img, valid)
    x = img.astype(np.float32)
    x[:, ~valid] = np.nan
    border, inside = [], []
    # Transposing the row jumps turns row borders into column borders: one code path for both.
    for axis, g, xa in (("x", gx, x), ("y", gy.T, x.transpose(0, 2, 1))):
        n_lines, other = g.shape[1] + 1, g.shape[0]
        hos = hand_overs(n_lines, overlap)
        in_band = np.zeros(n_lines, bool)
        for ho in hos:
            in_band[max(ho.band[0], 0) : ho.band[1] + 1] = True
        in_band[0] = True  # there is no line 0
        inside.append(g[:, ~in_band[1:]].ravel())
        # The band jump: from the last pixel only tile k-1 covers to the first only tile k covers
        # (span overlap + 1), against the same span inside tiles (pairs with no band line between).
        span = overlap + 1
        bands_before = np.cumsum(in_band)
        ok = np.flatnonzero(bands_before[span:] - bands_before[:-span] == 0)
        pool.band_inside.append(np.abs(xa[:, :, ok + span] - xa[:, :, ok]).sum(0).ravel())
        stride = grid.stride
        for ho in hos:
            b = g[:, [c - 1 for c in ho.lines]]  # (other, n border lines)
            border.append(b.ravel())
            p0, p1 = ho.band[0] - 1, ho.band[1]
            band = np.abs(xa[:, :, p1] - xa[:, :, p0]).sum(0) if p0 >= 0 and p1 < n_lines else np.full(other, np.nan)
            pool.band_border.append(band)
            near = ok[((ok + span >= p0 - NEAR) & (ok + span <= p0)) | ((ok >= p1) & (ok <= p1 + NEAR))]
            for s0 in range(0, other, stride):
                seg = slice(s0, min(s0 + stride, other))
                if np.isnan(band[seg]).mean() > 0.5 or not near.size:
                    continue
                local = np.nanmean(np.abs(xa[:, seg, near + span] - xa[:, seg, near]).sum(0))
                excess = float(np.nanmean(band[seg]) - local)
                mid = (s0 + seg.stop) // 2
                centre = (mid, ho.centre) if axis == "x" else (ho.centre, mid)
                pool.segments.append(Segment(where, axis, centre, b[seg].ravel(), band[seg], excess))
    b, i = np.concatenate(border) if border else np.array([]), np.concatenate(inside)
    b, i = b[~np.isnan(b)], i[~np.isnan(i)]
    pool.border.append(b)
    pool.inside.append(i)
    pool.per_raster[where] = {
        "seam_score": round((sums[0] / sums[1]) / (sums[2] / sums[3]), 3) if sums[1] else None,
        "p99_ratio": round(float(np.percentile(b, 99) / np.percentile(i, 99)), 3) if b.size else None,
        "border_px": int(b.size),
    }


def summarise(pool: Pool, rng: np.random.Generator, n_boot: int = 500) -> dict:
    b, i = np.concatenate(pool.border), np.concatenate(pool.inside)
    p99_in = float(np.percentile(i, 99))
    row = {
        "seam_score": round((pool.seam[0] / pool.seam[1]) / (pool.seam[2] / pool.seam[3]), 3),
        "p99_border": round(float(np.percentile(b, 99)), 1),
        "p99_inside": round(p99_in, 1),
        "p99_ratio": round(float(np.percentile(b, 99)) / p99_in, 3),
        "p999_ratio": round(float(np.percentile(b, 99.9) / np.percentile(i, 99.9)), 3),
        "border_px": int(b.size),
        "inside_px": int(i.size),
        "segments": len(pool.segments),
    }
    bb, bi = (np.concatenate(a) for a in (pool.band_border, pool.band_inside))
    bb, bi = bb[~np.isnan(bb)], bi[~np.isnan(bi)]
    band_in = float(np.percentile(bi, 99))
    row["band_p99_ratio"] = round(float(np.percentile(bb, 99)) / band_in, 3)
    segs = [s.jumps[~np.isnan(s.jumps)] for s in pool.segments]
    bands = [s.band[~np.isnan(s.band)] for s in pool.segments]
    boot, boot_band = [], []
    for _ in range(n_boot):
        pick = rng.integers(0, len(segs), len(segs))
        boot.append(np.percentile(np.concatenate([segs[k] for k in pick]), 99) / p99_in)
        boot_band.append(np.percentile(np.concatenate([bands[k] for k in pick]), 99) / band_in)
    row["p99_ratio_ci90"] = [round(float(np.percentile(boot, q)), 3) for q in (5, 95)]
    row["band_p99_ratio_ci90"] = [round(float(np.percentile(boot_band, q)), 3) for q in (5, 95)]
    worst = sorted(pool.segments, key=lambda s: -s.excess)[:5]
    row["worst_excess"] = [round(s.excess, 1) for s in worst]
    row["worst_where"] = [f"{s.where} {s.axis}@{s.centre}" for s in worst]
    return row


# ---- the picture -----------------------------------------------------------------------------
def crop(img: np.ndarray, centre: tuple[int, int]) -> np.ndarray:
    """A ``CROP``² RGB crop around ``centre``, white past the raster's edge."""
    out = np.full((CROP, CROP, 3), 255, np.uint8)
    r0, c0 = centre[0] - CROP // 2, centre[1] - CROP // 2
    h, w = img.shape[1:]
    rr, cc = slice(max(r0, 0), min(r0 + CROP, h)), slice(max(c0, 0), min(c0 + CROP, w))
    out[rr.start - r0 : rr.stop - r0, cc.start - c0 : cc.stop - c0] = img[:3, rr, cc].transpose(1, 2, 0)
    return out


def picture(columns: list[tuple[str, list[tuple[np.ndarray, str, str]]]], path: Path, zoom: int = 2) -> int:
    """Columns of crops (worst first), each under its title, with ticks marking the border line."""
    from PIL import Image, ImageDraw

    cell, pad, head, foot = CROP * zoom, 6, 18, 14
    n_rows = max(len(c[1]) for c in columns)
    sheet = Image.new("RGB", (len(columns) * (cell + pad) + pad, head + n_rows * (cell + foot + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, (title, cells) in enumerate(columns):
        x0 = pad + j * (cell + pad)
        draw.text((x0, 3), title, fill="black")
        for i, (img, axis, caption) in enumerate(cells):
            y0 = head + i * (cell + foot + pad)
            sheet.paste(Image.fromarray(img).resize((cell, cell), Image.NEAREST), (x0, y0))
            mid = CROP // 2 * zoom
            if axis == "x":  # a vertical border: ticks above and below, outside the crop
                draw.line([(x0 + mid, y0 - 4), (x0 + mid, y0 - 1)], fill="red", width=2)
                draw.line([(x0 + mid, y0 + cell), (x0 + mid, y0 + cell + 3)], fill="red", width=2)
            else:
                draw.line([(x0 - 4, y0 + mid), (x0 - 1, y0 + mid)], fill="red", width=2)
            draw.text((x0, y0 + cell + 1), caption, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, quality=80, optimize=True)
    return path.stat().st_size


# ---- sweep -----------------------------------------------------------------------------------
COLS = [
    ("grid", "grid", ""),
    ("overlap", "overlap", "d"),
    ("work_per_px", "work/px", ".2f"),
    ("seam_score", "seam score", ".3f"),
    ("p99_border", "p99 border", ".1f"),
    ("p99_inside", "p99 inside", ".1f"),
    ("p99_ratio", "p99 ratio", ".3f"),
    ("ci", "90 % CI", ""),
    ("p999_ratio", "p99.9 ratio", ".3f"),
    ("band_p99_ratio", "band p99 ratio", ".3f"),
    ("band_ci", "90 % CI", ""),
    ("segments", "segments", "d"),
    ("worst", "worst band excess", ""),
]


def bench_sweep(args: argparse.Namespace) -> dict:
    import rasterio

    data = Path(args.data)
    srcs = rasters(data)
    if not srcs:
        raise SystemExit(f"no rasters under {data}/geotiffs or {data}/real: pass --data")
    model = args.model or default_model()
    keep = Path(args.keep)
    overlaps = [int(o) for o in args.overlaps.split(",")]
    crop_overlaps = [int(o) for o in args.crop_overlaps.split(",")]
    rng = np.random.default_rng(0)
    print(f"{len(srcs)} rasters: " + ", ".join(label(p, data) for p in srcs), flush=True)
    rows, crops = [], {}
    for grid in args.grids.split(","):
        for overlap in overlaps:
            pool = Pool()
            images = {}
            for src in srcs:
                where = label(src, data)
                path = render_map(src, keep / grid / f"o{overlap}" / where.replace("/", "__"), model, grid, overlap)
                with rasterio.open(path) as ds:
                    img, valid = ds.read(), ds.dataset_mask() > 0
                measure(img, valid, overlap, where, pool)
                images[where] = img
            row = {"grid": grid, "overlap": overlap, "work_per_px": (TILE / (TILE - overlap)) ** 2}
            row |= summarise(pool, rng)
            row["per_raster"] = pool.per_raster
            row["ci"] = "{:.3f}–{:.3f}".format(*row["p99_ratio_ci90"])
            row["band_ci"] = "{:.3f}–{:.3f}".format(*row["band_p99_ratio_ci90"])
            row["worst"] = " ".join(f"{e:.0f}" for e in row["worst_excess"][:3])
            rows.append(row)
            print(table([row], COLS) if len(rows) == 1 else table([row], COLS).splitlines()[-1], flush=True)
            if overlap in crop_overlaps:
                worst = sorted(pool.segments, key=lambda s: -s.excess)[: args.crop_rows]
                crops[(grid, overlap)] = [
                    (crop(images[s.where], s.centre), s.axis, f"{s.where.split('/', 1)[-1][:26]} +{s.excess:.0f}")
                    for s in worst
                ]
            with open(keep / "sweep.jsonl", "a") as f:
                f.write(json.dumps({k: v for k, v in row.items() if k not in ("ci", "band_ci", "worst")}) + "\n")
    print("\nsweep (pooled over rasters):\n" + table(rows, COLS), flush=True)
    out = {"benchmark": "overlap sweep", "model": Path(model).name, "rasters": [label(p, data) for p in srcs]}
    out["rows"] = [{k: v for k, v in r.items() if k not in ("ci", "band_ci", "worst")} for r in rows]
    if crops and args.crops:
        columns = []
        for overlap in crop_overlaps:
            cells = [c for grid in args.grids.split(",") for c in crops.get((grid, overlap), [])]
            columns.append((f"overlap {overlap}", cells))
        size = picture(columns, Path(args.crops))
        print(f"wrote {args.crops} ({size / 1024:.0f} KB): worst borders, model grid first", flush=True)
        out["crops"] = {"path": args.crops, "kb": round(size / 1024)}
    return out


# ---- throughput ------------------------------------------------------------------------------
def bench_throughput(args: argparse.Namespace) -> dict:
    overlaps = [int(o) for o in args.overlaps.split(",")]
    perf = perf_parser().parse_args(
        ["e2e", "--size", str(args.size), "--chunk", str(args.chunk), "--no-pyramid", "--precision", "auto"]
    )
    model = args.model or default_model()
    perf.model = model
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_overlap_") as tmp:
        tmp = Path(tmp)
        src = mosaic(VIENNA, tmp / f"mosaic_{args.size}.tif", args.size)

        def baseline() -> float:
            doc, _, _ = _child("_baseline", perf, model, src, tmp)
            mpx = doc["width"] * doc["height"] / 1e6 / doc["seconds"]
            print(f"  baseline {mpx:.3f} Mpx/s ({doc['seconds']:.1f} s, {doc['tiles']} tiles)", flush=True)
            return mpx

        before = baseline()
        for k in range(args.rounds):
            order = overlaps if k % 2 == 0 else overlaps[::-1]
            done = []
            for overlap in order:
                perf.overlap = overlap
                doc, _, _ = _child("_e2e", perf, model, src, tmp)
                mpx = doc["width"] * doc["height"] / 1e6 / doc["render_seconds"]
                done.append({"round": k + 1, "overlap": overlap, "mpx_s": mpx, "tiles": doc["tiles"],
                             "seconds": doc["render_seconds"], "precision": doc["precision"]})  # fmt: skip
                print(f"  round {k + 1}: overlap {overlap}: {mpx:.3f} Mpx/s ({doc['render_seconds']:.1f} s, "
                      f"{doc['tiles']} tiles, {doc['precision']})", flush=True)  # fmt: skip
            after = baseline()
            for r in done:
                r |= {"baseline_before": before, "baseline_after": after, "ratio": r["mpx_s"] / ((before + after) / 2)}
            runs += done
            before = after
    summary = []
    for overlap in overlaps:
        mine = [r for r in runs if r["overlap"] == overlap]
        summary.append({
            "overlap": overlap,
            "tiles": mine[0]["tiles"],
            "mpx_s": spread([r["mpx_s"] for r in mine])["median"],
            "ratio": spread([r["ratio"] for r in mine])["median"],
            "ratios": " ".join(f"{r['ratio']:.3f}" for r in mine),
            "precision": mine[0]["precision"],
        })  # fmt: skip
    base = [r["baseline_before"] for r in runs] + [runs[-1]["baseline_after"]]
    print(f"\n{args.size}² Vienna mosaic, --no-resample, chunk {args.chunk}, batch 8; baseline (batch 1, fp32, "
          f"no overlap) {min(base):.3f}–{max(base):.3f} Mpx/s")  # fmt: skip
    cols = [("overlap", "overlap", "d"), ("tiles", "tiles", "d"), ("precision", "precision", ""),
            ("mpx_s", "median Mpx/s", ".3f"), ("ratio", "median useful ÷ baseline", ".3f"),
            ("ratios", "per round", "")]  # fmt: skip
    print(table(summary, cols), flush=True)
    return {"benchmark": "overlap throughput", "model": Path(model).name, "size": args.size, "runs": runs,
            "summary": summary}  # fmt: skip


# ---- ceiling --------------------------------------------------------------------------------
def bench_ceiling(args: argparse.Namespace) -> dict:
    import copy

    import torch
    from harness import count_flops, time_predict

    from geopix.infer import Predictor, resolve_precision
    from geopix.models.checkpoint import load_checkpoint
    from geopix.plan import TileGrid

    loaded = load_checkpoint(args.model or default_model())
    flops = count_flops(copy.deepcopy(loaded.net).eval(), TILE, torch.device("cpu"))
    precision = resolve_precision("auto", "cpu")
    configs = {
        "baseline": Predictor(loaded.spec, copy.deepcopy(loaded.net), "cpu", False, "fp32"),
        "render": Predictor(loaded.spec, copy.deepcopy(loaded.net), "cpu", True, precision),
    }
    per_tile = {}
    for name, batch in (("baseline", 1), ("render", 8)):
        row = time_predict(configs[name], batch, TILE, args.seconds)
        per_tile[name] = 1.0 / row["tiles_s"]
        print(f"  {name}: batch {batch}, {configs[name].precision}, {1000 * per_tile[name]:.1f} ms/tile "
              f"({row['tiles_s'] * flops / 1e9:.1f} GFLOP/s)", flush=True)  # fmt: skip
    base_tiles = len(TileGrid(args.size, args.size, TILE, 0))
    rows = []
    for overlap in [int(o) for o in args.overlaps.split(",")]:
        tiles = len(TileGrid(args.size, args.size, TILE, overlap))
        ceiling = (per_tile["baseline"] * base_tiles) / (per_tile["render"] * tiles)
        rows.append({"overlap": overlap, "tiles": tiles, "work": tiles / base_tiles, "ceiling": ceiling})
    speedup = per_tile["baseline"] / per_tile["render"]
    print(f"\n{args.size}² render, {flops / 1e9:.2f} GFLOP/tile, {torch.get_num_threads()} torch threads; "
          f"the render's generator is {speedup:.2f}× faster per tile than the baseline's")  # fmt: skip
    cols = [("overlap", "overlap", "d"), ("tiles", "tiles", "d"), ("work", "tiles ÷ baseline's", ".3f"),
            ("ceiling", "ceiling: useful ÷ baseline", ".2f")]  # fmt: skip
    print(table(rows, cols), flush=True)
    return {"benchmark": "overlap ceiling", "model": loaded.spec.source, "size": args.size, "precision": precision,
            "flops_per_tile": flops, "seconds_per_tile": per_tile, "rows": rows}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["sweep", "throughput", "ceiling"])
    ap.add_argument("--model", default="", help="a checkpoint (default: the shipped sat2map model)")
    ap.add_argument("--overlaps", default="", help="default: 0,8,16,24,32,48,64 (sweep), 32,64 (throughput)")
    ap.add_argument("--data", default=str(DATA), help="folder with geotiffs/ and real/ (../shared/data)")
    ap.add_argument("--grids", default="model,source", help="sweep: model (resampled, the default) and/or source")
    ap.add_argument("--keep", default=str(Path(tempfile.gettempdir()) / "geopix_overlap_sweep"),
                    help="sweep: rendered maps are kept (and reused) here")  # fmt: skip
    ap.add_argument("--crops", default=str(ROOT / "docs" / "img" / "overlap_worst_borders.jpg"))
    ap.add_argument("--crop-overlaps", default="0,16,24,32,64")
    ap.add_argument("--crop-rows", type=int, default=3, help="worst borders per grid and overlap")
    ap.add_argument("--size", type=int, default=8192, help="throughput: mosaic side")
    ap.add_argument("--chunk", type=int, default=1024, help="throughput: output block side")
    ap.add_argument("--rounds", type=int, default=3, help="throughput: rounds")
    ap.add_argument("--seconds", type=float, default=10.0, help="ceiling: seconds per generator measurement")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if not args.overlaps:
        args.overlaps = {"sweep": "0,8,16,24,32,48,64", "throughput": "32,64", "ceiling": "0,16,32,64"}[args.which]
    if args.which == "throughput" and not VIENNA.exists():
        raise SystemExit(f"{VIENNA} is absent: the throughput mosaic is built from ../shared")
    Path(args.keep).mkdir(parents=True, exist_ok=True)
    out = {"sweep": bench_sweep, "throughput": bench_throughput, "ceiling": bench_ceiling}[args.which](args)
    out["machine"] = machine()
    write_json(args.json, out)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
