"""How faithful a rendered map is on real imagery: score renders against vector labels.

Each set is one or more georeferenced rasters and the vector layers that label them.  Every
raster is rendered through the real render path (``geopix.render``: resampling to the
model's ground resolution, colour matching, tiling, blending) on the model's grid
(``--output-resolution model``), the labels are drawn on that same grid by the same code that
makes training pairs (:mod:`geopix.data.rasterize`), and each map pixel is classified to the
nearest style colour (:func:`geopix.style.classify`).  For each class group the labels cover
(``style.METRIC_GROUPS``: building, road = any road class, park, water) it counts, over the
pixels where that group's truth is known, true and false positives and false negatives, and
reports IoU, precision and recall, summed over a set's rasters.  Groups the labels do not
cover are not scored: a building-only layer says nothing about roads.  A constant
"building everywhere" prediction is scored the same way, as an anchor.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from PIL import Image
from pyproj import CRS

from geopix import style
from geopix.config import RealEvalConfig, RenderConfig, resolve_config
from geopix.data.rasterize import Labels, rasterize_labels
from geopix.data.vectors import LayerSpec, layer_specs, read_layers
from geopix.errors import GeopixError, LabelCoverageError
from geopix.evaluate import _finite
from geopix.output import written_whole
from geopix.pipeline import render
from geopix.read import inspect_raster, to_unit

REPORT = "report.json"


@dataclass(frozen=True)
class RealSet:
    """One region: rasters and the vector layers that label them."""

    name: str
    rasters: tuple[Path, ...]
    layers: tuple[LayerSpec, ...]
    value_map: dict[str, str] = field(default_factory=dict)
    covers: frozenset[str] | None = None


def _real_set(s: Mapping[str, Any] | RealSet, root: Path | None) -> RealSet:
    """One set from its JSON form (paths relative to ``root`` when given); a ``RealSet`` passes as it is."""
    if isinstance(s, RealSet):
        return s
    return RealSet(
        name=s["name"],
        rasters=tuple(root / r if root is not None else Path(r) for r in s["rasters"]),
        layers=tuple(layer_specs(s["layers"], root)),
        value_map=dict(s.get("map", {})),
        covers=frozenset(s["covers"]) if "covers" in s else None,
    )


def load_sets(path: str | Path) -> list[RealSet]:
    """Sets from a JSON file: ``{"sets": [{"name", "rasters": [...], "layers": ["PATH[=CLASS|:FIELD]"], "map": {}}]}``.

    Relative paths are relative to the file.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        return [_real_set(s, path.parent) for s in doc["sets"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GeopixError(
            f"cannot read evaluation sets from {path} ({exc}); expected JSON "
            '{"sets": [{"name": ..., "rasters": [...], "layers": [...]}]}'
        ) from exc


def read_sets(sets: str | Path | Sequence[Mapping[str, Any] | RealSet]) -> list[RealSet]:
    """The sets a ``RealEvalConfig`` names: a sets .json file (``load_sets``), or its ``"sets"`` list
    (paths as given)."""
    if isinstance(sets, str | Path):
        return load_sets(sets)
    try:
        return [_real_set(s, None) for s in sets]
    except (KeyError, TypeError) as exc:
        raise GeopixError(
            f"evaluation set {exc} is missing or malformed; each set is "
            '{"name": ..., "rasters": [...], "layers": [...]} (optional "map", "covers")'
        ) from exc


class Counts:
    """True/false positives and false negatives per class group."""

    def __init__(self) -> None:
        self.c: dict[str, list[int]] = {}

    def add(self, group: str, truth: np.ndarray, pred: np.ndarray, known: np.ndarray) -> None:
        t, p = truth[known], pred[known]
        tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
        acc = self.c.setdefault(group, [0, 0, 0, 0])
        for i, v in enumerate((tp, fp, fn, int(known.sum()))):
            acc[i] += v

    def merge(self, other: Counts) -> None:
        for g, v in other.c.items():
            acc = self.c.setdefault(g, [0, 0, 0, 0])
            for i in range(4):
                acc[i] += v[i]

    def scores(self) -> dict[str, dict[str, float]]:
        out = {}
        for g, (tp, fp, fn, n) in self.c.items():
            out[g] = {
                "iou": tp / (tp + fp + fn) if tp + fp + fn else math.nan,
                "precision": tp / (tp + fp) if tp + fp else math.nan,
                "recall": tp / (tp + fn) if tp + fn else math.nan,
                "truth_share": (tp + fn) / n if n else math.nan,
                "pixels": n,
            }
        return out


def covered_groups(covers: frozenset[str]) -> list[str]:
    return [g for g, members in style.METRIC_GROUPS.items() if g != "background" and set(members) & covers]


def score_map(classes: np.ndarray, labels: Labels, groups: list[str]) -> Counts:
    """Count hits of a classified map (H, W class indices) against ``labels`` for ``groups``."""
    counts = Counts()
    for g in groups:
        members = [style.CLASS_NAMES.index(n) for n in style.METRIC_GROUPS[g]]
        bits = sum(1 << i for i in members)
        truth = np.isin(labels.top, members)
        known = (labels.allowed != 0) & (truth | ((labels.allowed & bits) == 0))
        counts.add(g, truth, np.isin(classes, members), known)
    return counts


@dataclass
class RealEvalReport:
    model: str
    sets: dict[str, dict[str, dict[str, float]]]  # set → group → iou/precision/recall
    baseline_all_building: dict[str, dict[str, float]]  # set → building scores of "building everywhere"
    mean: dict[str, float]  # group → mean IoU over the sets that cover it
    seconds: float = 0.0
    files: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # repaired geometries, unknown values, …

    def to_json(self) -> str:
        return json.dumps(_finite(asdict(self)), indent=2, allow_nan=False)


def evaluate_sets(config: RealEvalConfig | None = None, /, **kwargs) -> RealEvalReport:
    """Render every raster of every set with ``config.model`` and score it (see the module docstring).

    Also callable as ``evaluate_sets(model="sat2map", sets="sets.json", out_dir="out")``; ``sets``
    may also be the file's ``"sets"`` list, or sets already read (``load_sets``)."""
    config = resolve_config(RealEvalConfig, config, kwargs, "evaluate_sets")
    sets = read_sets(config.sets)
    t0 = time.perf_counter()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_set, base, files, notes = {}, {}, {}, []
    for s in sets:
        total, total_base = Counts(), Counts()
        for raster in s.rasters:
            run_dir = out / s.name / Path(raster).stem
            cfg = RenderConfig(
                input=Path(raster),
                output_dir=run_dir,
                model=str(config.model),
                tiles=config.tile_config(),
                infer=config.infer_config(),
                output_resolution="model",
                scheduler="sync",
                overwrite=True,
                cog=False,
            )
            result = render(cfg)
            with rasterio.open(result.map_path) as src:
                rgb = src.read([1, 2, 3]).transpose(1, 2, 0)
                valid = src.dataset_mask() > 0
                transform, crs, bounds = src.transform, CRS.from_user_input(src.crs), tuple(src.bounds)
            features, stats = read_layers(list(s.layers), crs, bounds, s.value_map, s.covers)
            notes += [f"{s.name}/{Path(raster).name}: {w}" for w in stats.warnings()]
            groups = covered_groups(features.covers)
            if not groups:
                raise LabelCoverageError(
                    f"set {s.name}: the layers cover no class geopix scores ({', '.join(style.METRIC_GROUPS)})"
                )
            labels = rasterize_labels(features, transform, rgb.shape[:2], valid)
            classes = style.classify(rgb)
            total.merge(score_map(classes, labels, groups))
            building = np.full(classes.shape, style.CLASS_NAMES.index("building"), np.uint8)
            total_base.merge(score_map(building, labels, [g for g in groups if g == "building"]))
            files[f"{s.name}/{Path(raster).stem}"] = str(_side_by_side(raster, rgb, labels, run_dir))
        per_set[s.name] = total.scores()
        if total_base.c:
            base[s.name] = total_base.scores()
    mean = {}
    for g in style.METRIC_GROUPS:
        vals = [v[g]["iou"] for v in per_set.values() if g in v and not math.isnan(v[g]["iou"])]
        if vals:
            mean[g] = float(np.mean(vals))
    report = RealEvalReport(str(config.model), per_set, base, mean, round(time.perf_counter() - t0, 2), files, notes)
    with written_whole(out / REPORT) as tmp:
        tmp.write_text(report.to_json() + "\n")
    report.files["report"] = str(out / REPORT)
    return report


def _side_by_side(raster: str | Path, rgb: np.ndarray, labels: Labels, out: Path) -> Path:
    """aerial | truth (unknown grey) | map, on the model's grid."""
    h, w = rgb.shape[:2]
    with rasterio.open(raster) as src:
        info = inspect_raster(raster)
        data = src.read(list(info.bands), out_shape=(3, h, w), resampling=rasterio.enums.Resampling.average)
    aerial = np.clip(np.rint((to_unit(data, info) + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    truth = style.paint(labels.top)
    truth[labels.allowed == 0] = (128, 128, 128)
    path = out / "side_by_side.png"
    with written_whole(path) as tmp:
        Image.fromarray(np.concatenate([aerial, truth, rgb], axis=1)).save(tmp, format="PNG")
    return path
