"""How faithful a model's map is on labelled pairs: IoU per class group from the pairs' known masks.

``geopix dataset vectors`` and ``geopix dataset labels`` write pairs whose ``M/`` masks say,
per pixel, which style classes it may be (:mod:`geopix.data.rasterize`).  That is enough to
score any place the same way, georeferenced or not: for a class group *g*, a pixel is truly
*g* where every class it may be is in *g*, truly not *g* where none is, and unknown
otherwise (a building-only set's background may be a road, so roads are not scored there).
Each pair's aerial goes through the model as one 256² tile (no blending with neighbours:
score pairs cut without overlap, ``--stride`` = ``--tile``), each map pixel is classified to the
nearest style colour, and true/false positives and false negatives are summed per place.

Beside the IoU, a *confusion* table counts what each kind of labelled pixel (its allowed set:
``water``, ``park|background`` for vegetation, …) was drawn as, so "forest painted as water" is
a number per place.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from geopix import style
from geopix.data.pairs import PairRef, find_pairs, find_places, read_image, read_mask
from geopix.data.rasterize import ALL_CLASSES
from geopix.errors import DatasetError

GROUPS = ("building", "road", "park", "water")


def group_bits(group: str) -> int:
    return sum(1 << style.CLASS_NAMES.index(m) for m in style.METRIC_GROUPS[group])


def kind_name(bits: int) -> str:
    """``park|background`` for the allowed set ``bits``."""
    return "|".join(c.name for c in style.CLASSES if bits & (1 << c.index))


@dataclass
class PlaceCounts:
    """Per group: [tp, fp, fn, known pixels]; per kind: drawn-class pixel counts."""

    groups: dict[str, list[int]] = field(default_factory=dict)
    kinds: dict[str, list[int]] = field(default_factory=dict)

    def add(self, classes: np.ndarray, allowed: np.ndarray) -> None:
        for g in GROUPS:
            bits = group_bits(g)
            labelled = allowed != 0
            truth = labelled & ((allowed & (ALL_CLASSES & ~bits)) == 0)
            negative = labelled & ((allowed & bits) == 0)
            pred = np.isin(classes, [style.CLASS_NAMES.index(m) for m in style.METRIC_GROUPS[g]])
            acc = self.groups.setdefault(g, [0, 0, 0, 0])
            acc[0] += int((truth & pred).sum())
            acc[1] += int((negative & pred).sum())
            acc[2] += int((truth & ~pred).sum())
            acc[3] += int((truth | negative).sum())
        for bits in np.unique(allowed):
            if bits == 0 or bits == ALL_CLASSES:
                continue
            sel = allowed == bits
            hist = np.bincount(classes[sel], minlength=len(style.CLASSES))
            acc = self.kinds.setdefault(kind_name(int(bits)), [0] * len(style.CLASSES))
            for i, n in enumerate(hist):
                acc[i] += int(n)

    def scores(self) -> dict[str, dict[str, float]]:
        """IoU, precision, recall and truth share of every group with truth pixels here."""
        out = {}
        for g, (tp, fp, fn, n) in self.groups.items():
            if tp + fn == 0:
                continue  # no pixel of this group is known to be it: not scored at this place
            out[g] = {
                "iou": tp / (tp + fp + fn),
                "precision": tp / (tp + fp) if tp + fp else math.nan,
                "recall": tp / (tp + fn),
                "truth_share": (tp + fn) / n if n else math.nan,
                "pixels": n,
            }
        return out

    def confusion(self) -> dict[str, dict[str, float]]:
        """Per labelled kind: the share of its pixels drawn as each style class."""
        out = {}
        for kind, hist in self.kinds.items():
            total = sum(hist)
            out[kind] = {c.name: round(n / total, 4) for c, n in zip(style.CLASSES, hist, strict=True) if n}
        return out


@dataclass
class PairEvalReport:
    model: str
    places: dict[str, dict[str, dict[str, float]]]  # place → group → iou/precision/recall
    confusion: dict[str, dict[str, dict[str, float]]]  # place → labelled kind → drawn class → share
    mean: dict[str, float]  # group → mean IoU over the places that score it
    pairs: dict[str, int]
    seconds: float = 0.0

    def to_json(self) -> str:
        def finite(x: object) -> object:
            if isinstance(x, dict):
                return {k: finite(v) for k, v in x.items()}
            if isinstance(x, float) and not math.isfinite(x):
                return None
            return x

        return json.dumps(finite(asdict(self)), indent=2, allow_nan=False)


def labelled_places(root: str | Path) -> dict[str, list[PairRef]]:
    """A places folder, or one pairs folder as a single place; every pair must carry a known mask."""
    root = Path(root)
    places = find_places(root) or {root.name: find_pairs(root, "train")}
    for name, refs in places.items():
        if any(r.m is None for r in refs):
            raise DatasetError(
                f"{name}: pairs without known masks (M/) cannot be scored per class; make them with "
                "geopix dataset vectors or geopix dataset labels"
            )
    return places


def evaluate_pairs(
    model: str,
    data: str | Path,
    *,
    device: str = "cpu",
    batch_size: int = 8,
    on_progress=None,
) -> PairEvalReport:
    """Score ``model`` on every place of ``data`` (a places folder, or one pairs folder)."""
    from geopix.infer import Predictor
    from geopix.models.registry import load_model

    t0 = time.perf_counter()
    predictor = Predictor.from_loaded(load_model(model), device=device)
    places = labelled_places(data)
    total = sum(len(v) for v in places.values())
    done = 0
    per_place, confusion, counts = {}, {}, {}
    for name, refs in places.items():
        acc = PlaceCounts()
        for start in range(0, len(refs), batch_size):
            chunk = refs[start : start + batch_size]
            images = np.stack([read_image(r.a) for r in chunk])  # the aerial; its drawn map is not scored
            rgb = predictor.predict_batch(images)
            for ref, out in zip(chunk, rgb, strict=True):
                acc.add(style.classify(out), read_mask(ref))
            done += len(chunk)
            if on_progress is not None:
                on_progress("score", done, total)
        per_place[name] = acc.scores()
        confusion[name] = acc.confusion()
        counts[name] = len(refs)
    mean = {}
    for g in GROUPS:
        vals = [v[g]["iou"] for v in per_place.values() if g in v]
        if vals:
            mean[g] = float(np.mean(vals))
    return PairEvalReport(str(model), per_place, confusion, mean, counts, round(time.perf_counter() - t0, 2))
